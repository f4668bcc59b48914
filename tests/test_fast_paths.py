"""The fast paths learn what the plain path learns: same fixed-seed run, same losses."""
import importlib

import numpy as np
import pytest
from conftest import read_scalars

SETUPS = {"ppo_continuous": "Hopper-v4", "ppo_discrete": "CartPole-v1"}
LOSSES = ["losses/value_loss", "losses/policy_loss", "losses/entropy", "losses/approx_kl", "losses/clipfrac"]


def logged(module, workdir, monkeypatch, **flags):
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    args = module.Args(env_id=SETUPS[module.__name__], num_envs=2, num_steps=256, num_minibatches=8,
                       update_epochs=4, total_timesteps=4 * 512, cuda=False, **flags)  # fmt: skip
    summary = module.train(args)
    return read_scalars(workdir / "runs" / summary["run_name"])


@pytest.mark.parametrize("module_name", list(SETUPS))
def test_compile_gives_the_same_losses_as_the_plain_path(module_name, tmp_path, monkeypatch):
    """Compiled kernels round differently in the last bits, and sampling (normal, multinomial) runs
    the eager ops on the same RNG stream, so over 4 iterations the two runs stay within 1e-4."""
    module = importlib.import_module(module_name)
    plain = logged(module, tmp_path / "plain", monkeypatch)
    compiled = logged(module, tmp_path / "compiled", monkeypatch, compile=True)
    for tag in LOSSES:
        steps = [step for step, _ in plain[tag]]
        assert steps == [step for step, _ in compiled[tag]] and len(steps) == 4
        np.testing.assert_allclose([v for _, v in compiled[tag]], [v for _, v in plain[tag]], rtol=1e-4, atol=1e-6,
                                   err_msg=tag)  # fmt: skip
    returns = [[v for _, v in run["charts/episodic_return"]] for run in (plain, compiled)]
    np.testing.assert_allclose(returns[1], returns[0], rtol=1e-4)


@pytest.mark.parametrize("module_name", list(SETUPS))
def test_async_envs_give_the_same_losses_as_sync_envs(module_name, tmp_path, monkeypatch):
    """Stepping the envs in subprocesses changes where they run, not what they return: equal losses."""
    import gymnasium as gym

    module = importlib.import_module(module_name)
    envs = module.make_envs(module.Args(env_id=SETUPS[module_name], num_envs=2, async_envs=True))
    assert isinstance(envs.unwrapped, gym.vector.AsyncVectorEnv)  # the flag really moves the envs out
    envs.close()
    sync = logged(module, tmp_path / "sync", monkeypatch)
    subprocesses = logged(module, tmp_path / "async", monkeypatch, async_envs=True)
    for tag in [*LOSSES, "charts/episodic_return"]:
        assert len(sync[tag]) > 0
        assert subprocesses[tag] == sync[tag], tag


@pytest.mark.parametrize(
    "module_name, action_shape, num_envs",
    [
        ("ppo_continuous", 3, 16),  # CPU draws 16+ normals with a vectorized kernel...
        ("ppo_continuous", 6, 1),  # ...and fewer with a scalar one: HalfCheetah's default rollout
        ("ppo_discrete", [4, 2, 3], 16),  # MultiDiscrete
        ("ppo_discrete", [2], 4),  # CartPole's default rollout
    ],
)
def test_rollout_sampler_draws_what_the_distributions_draw(module_name, action_shape, num_envs):
    """The rollout's written-out sampler and the loss's torch.distributions path are one policy:
    from the same RNG state they give the same actions, log-probs and values, to the last bit."""
    import torch

    module = importlib.import_module(module_name)
    torch.manual_seed(0)
    agent = module.Agent(5, action_shape)
    if module_name == "ppo_continuous":  # distinct stds, so a mix-up shows
        agent.actor_logstd.data = torch.linspace(-0.5, 0.7, action_shape).reshape(1, -1)
    obs = torch.randn(num_envs, 5)
    with torch.no_grad():
        torch.manual_seed(1)
        action, logprob, value = agent.sample_action_and_value(obs)
        rng_after_sampler = torch.get_rng_state()
        torch.manual_seed(1)
        expected_action, expected_logprob, _, expected_value = agent.get_action_and_value(obs)
        assert torch.equal(torch.get_rng_state(), rng_after_sampler)  # as many draws: later ones agree too
        _, logprob_of_given_action, _, _ = agent.get_action_and_value(obs, action)
    assert action.shape == expected_action.shape and len(action.unique()) > 1  # varied samples
    assert torch.equal(action, expected_action)
    assert torch.equal(logprob, expected_logprob)
    assert torch.equal(logprob, logprob_of_given_action)  # what the loss will compute for the stored action
    assert torch.equal(value, expected_value)
