"""The clipped PPO objective: hand-computed gradients, masking, and the first-minibatch invariants."""

import importlib

import numpy as np
import pytest
import torch

MODULES = ["ppo_continuous", "ppo_discrete"]


def loss_args(module, **overrides):
    args = module.Args(norm_adv=False, clip_coef=0.2, ent_coef=0.0, vf_coef=0.5)
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


def minibatch(**tensors):
    """A minibatch as ppo_loss takes it: the rollout's tensors by name."""
    return tensors


def policy_gradient(module, ratios, advantages, mask=None):
    """d(loss)/d(newlogprob) for given ratios, with the value and entropy terms switched off."""
    newlogprob = torch.tensor(np.log(ratios), dtype=torch.float32, requires_grad=True)
    n = len(ratios)
    mask = torch.ones(n) if mask is None else torch.tensor(mask, dtype=torch.float32)
    mb = minibatch(logprobs=torch.zeros(n), advantages=torch.tensor(advantages, dtype=torch.float32),
                   returns=torch.zeros(n), values=torch.zeros(n), valid=mask)  # fmt: skip
    loss, stats = module.ppo_loss(newlogprob, torch.zeros(n), torch.zeros(n), mb, loss_args(module, vf_coef=0.0))
    loss.backward()
    return newlogprob.grad.numpy(), loss.item(), stats


@pytest.mark.parametrize("module_name", MODULES)
def test_clipped_objective_gives_zero_gradient_beyond_the_clip_range(module_name):
    module = importlib.import_module(module_name)
    # ratio 1.5 with A > 0 and ratio 0.5 with A < 0 are clipped in the direction the update pushes:
    # no gradient. Inside the range (1.1, 0.9) and in the unclipped direction (0.5 with A > 0,
    # 1.5 with A < 0) the gradient of mean(-A * ratio) w.r.t. log ratio is -A * ratio / n.
    ratios = [1.5, 0.5, 1.1, 0.9, 0.5, 1.5]
    advantages = [1.0, -1.0, 2.0, -2.0, 1.0, -1.0]
    grad, loss, _ = policy_gradient(module, ratios, advantages)
    n = len(ratios)
    expected = [0.0, 0.0, -2.0 * 1.1 / n, 2.0 * 0.9 / n, -1.0 * 0.5 / n, 1.0 * 1.5 / n]
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-7)
    # loss = mean(max(-A r, -A clip(r))) computed by hand
    expected_loss = np.mean([-1.2, 0.8, -2.2, 1.8, -0.5, 1.5])
    assert loss == pytest.approx(expected_loss, rel=1e-5)


@pytest.mark.parametrize("module_name", MODULES)
def test_masked_samples_change_neither_loss_nor_gradient(module_name):
    module = importlib.import_module(module_name)
    grad_all, loss_all, _ = policy_gradient(module, [1.1, 0.9], [2.0, -2.0])
    grad_masked, loss_masked, _ = policy_gradient(module, [1.1, 0.9, 3.0], [2.0, -2.0, 100.0], mask=[1, 1, 0])
    assert loss_masked == pytest.approx(loss_all, rel=1e-6)
    np.testing.assert_allclose(grad_masked, [*grad_all, 0.0], rtol=1e-6)


@pytest.mark.parametrize("module_name", MODULES)
def test_masked_samples_are_out_of_every_term_and_the_advantage_statistics(module_name):
    """With advantage normalization, the value and entropy terms on, a masked sample with extreme
    numbers changes no loss term, no statistic, and gets no gradient."""
    module = importlib.import_module(module_name)
    args = loss_args(module, norm_adv=True, ent_coef=0.01, vf_coef=0.5, clip_vloss=True)

    def loss_and_grads(newlogprob, entropy, newvalue, logprob, advantages, returns, values, mask):
        inputs = [torch.tensor(x, dtype=torch.float32, requires_grad=True) for x in (newlogprob, entropy, newvalue)]
        names = ("logprobs", "advantages", "returns", "values", "valid")
        others = [torch.tensor(x, dtype=torch.float32) for x in (logprob, advantages, returns, values, mask)]
        loss, stats = module.ppo_loss(*inputs, dict(zip(names, others)), args)
        loss.backward()
        return loss.item(), stats, [x.grad for x in inputs]

    real = ([-1.0, -0.5, -2.0], [1.2, 0.9, 1.4], [0.3, -0.2, 0.8], [-1.1, -0.4, -1.9], [0.5, -1.5, 2.0],
            [1.0, -0.5, 0.1], [0.2, 0.1, 0.9])  # fmt: skip
    loss, stats, grads = loss_and_grads(*real, [1, 1, 1])
    masked_sample = (5.0, 7.0, 50.0, -3.0, 100.0, -9.0, 20.0)
    loss_m, stats_m, grads_m = loss_and_grads(*[[*x, extra] for x, extra in zip(real, masked_sample)], [1, 1, 1, 0])
    assert loss_m == pytest.approx(loss, rel=1e-6)
    assert stats_m.keys() == stats.keys()
    for name in stats:
        torch.testing.assert_close(stats_m[name], stats[name], msg=name)
    for grad, grad_m in zip(grads, grads_m):
        torch.testing.assert_close(grad_m[:3], grad)
        assert grad_m[3] == 0


@pytest.mark.parametrize("module_name", MODULES)
def test_debug_scalars_match_hand_calculation(module_name):
    module = importlib.import_module(module_name)
    ratios = np.array([1.5, 0.5, 1.1, 0.9])
    _, _, stats = policy_gradient(module, ratios, [1.0, -1.0, 2.0, -2.0])
    logratio = np.log(ratios)
    assert stats["old_approx_kl"].item() == pytest.approx(np.mean(-logratio), rel=1e-5)
    assert stats["approx_kl"].item() == pytest.approx(np.mean((ratios - 1) - logratio), rel=1e-5)
    assert stats["clipfrac"].item() == pytest.approx(0.5)  # 1.5 and 0.5 are outside [0.8, 1.2]


@pytest.mark.parametrize("module_name", MODULES)
def test_value_loss_is_clipped_around_the_old_value(module_name):
    module = importlib.import_module(module_name)
    # old value 0, return 1, new value 0.5: clipped value 0.2 -> max((0.5-1)^2, (0.2-1)^2) = 0.64
    n = 1
    newvalue = torch.tensor([0.5], requires_grad=True)
    mb = minibatch(logprobs=torch.zeros(n), advantages=torch.zeros(n), returns=torch.ones(n), values=torch.zeros(n),
                   valid=torch.ones(n))  # fmt: skip
    loss, stats = module.ppo_loss(torch.zeros(n), torch.zeros(n), newvalue, mb, loss_args(module, vf_coef=1.0))
    assert stats["value_loss"].item() == pytest.approx(0.5 * 0.64)
    loss.backward()
    assert newvalue.grad.item() == 0.0  # the clipped branch is active and constant in newvalue


@pytest.mark.parametrize("module_name", MODULES)
def test_ratio_is_one_and_approx_kl_zero_on_first_minibatch(module_name, tmp_path, monkeypatch):
    """Inside a real training run, the first minibatch of every update sees the rollout policy."""
    module = importlib.import_module(module_name)
    monkeypatch.chdir(tmp_path)
    calls = []
    real_loss = module.ppo_loss

    def recording_loss(newlogprob, entropy, newvalue, mb, args):
        loss, stats = real_loss(newlogprob, entropy, newvalue, mb, args)
        calls.append(((newlogprob - mb["logprobs"]).detach().abs().max().item(), stats["approx_kl"].item()))
        return loss, stats

    monkeypatch.setattr(module, "ppo_loss", recording_loss)
    env_id = "InvertedPendulum-v4" if module_name == "ppo_continuous" else "CartPole-v1"
    args = module.Args(env_id=env_id, num_envs=2, num_steps=32, num_minibatches=2, update_epochs=3,
                       total_timesteps=192, cuda=False)  # fmt: skip
    module.train(args)
    per_update = args.update_epochs * args.num_minibatches
    assert len(calls) == 3 * per_update
    for first in calls[::per_update]:
        max_logratio, approx_kl = first
        assert max_logratio < 1e-5  # ratio == 1 up to float rounding
        assert abs(approx_kl) < 1e-7
    # later minibatches did move the policy, so the check above is not vacuous
    assert max(c[0] for c in calls) > 1e-4


@pytest.mark.parametrize("module_name", MODULES)
def test_target_kl_stops_each_update_after_the_epoch_that_passes_it(module_name, tmp_path, monkeypatch):
    """--target-kl compares the last minibatch's approx_kl with the target after each epoch: a target below any
    moved policy's KL stops every update after its first epoch; a target above every KL, or none, runs them all."""
    module = importlib.import_module(module_name)
    monkeypatch.chdir(tmp_path)
    real_loss, calls = module.ppo_loss, []

    def counting_loss(newlogprob, entropy, newvalue, mb, args):
        calls.append(mb["obs"].shape[0])
        return real_loss(newlogprob, entropy, newvalue, mb, args)

    monkeypatch.setattr(module, "ppo_loss", counting_loss)
    env_id = "InvertedPendulum-v4" if module_name == "ppo_continuous" else "CartPole-v1"
    epochs_run = {}
    for target_kl in (1e-12, 1e3, None):
        calls.clear()
        module.train(module.Args(env_id=env_id, num_envs=2, num_steps=32, num_minibatches=2, update_epochs=3,
                                 total_timesteps=192, target_kl=target_kl, cuda=False))  # fmt: skip
        epochs_run[target_kl] = len(calls) / (3 * 2)  # per update: 3 updates of 2 minibatches an epoch
    assert epochs_run == {1e-12: 1, 1e3: 3, None: 3}


@pytest.mark.parametrize("module_name", ["ppo_continuous", "ppo_discrete"])
def test_return_statistics_merge_batches_as_one_running_mean_and_variance(module_name):
    """By hand: returns 1, 2, 3 have mean 2 and (population) variance 2/3; with 4 and 5 after them, the five have
    mean 3 and variance (4 + 1 + 0 + 1 + 4) / 5 = 2. The statistics start empty (count 0), so they are exact."""
    module = importlib.import_module(module_name)
    rms = module.Agent(3, *([2] if module_name == "ppo_continuous" else [[2]])).return_rms
    assert rms.tolist() == [0.0, 1.0, 0.0]  # without --norm-value: values and returns go through unchanged
    mean, std = module.update_return_rms(rms, np.array([1.0, 2.0, 3.0], dtype=np.float32))
    assert (mean, std**2) == pytest.approx((2.0, 2 / 3))
    mean, std = module.update_return_rms(rms, np.array([4.0, 5.0], dtype=np.float32))
    assert (mean, std**2) == pytest.approx((3.0, 2.0)) and rms[2].item() == 5
    module.update_return_rms(rms, np.full(4, 3.0, dtype=np.float32))  # four more at the mean: 2 x 5 / 9
    assert rms.tolist() == pytest.approx([3.0, 10 / 9, 9])


@pytest.mark.parametrize("module_name", ["ppo_continuous", "ppo_discrete"])
def test_norm_value_trains_the_critic_on_standardized_returns(module_name, tmp_path, monkeypatch):
    """With --norm-value the first update's targets are this batch's returns standardized by their own statistics
    (the running statistics start empty): mean 0 and population std 1 over the real transitions. The statistics count
    every real transition of every rollout."""
    module = importlib.import_module(module_name)
    monkeypatch.chdir(tmp_path)
    batches, real_loss = [], module.ppo_loss

    def recording_loss(newlogprob, entropy, newvalue, mb, args):
        batches.append((mb["returns"].clone(), mb["valid"].clone()))
        return real_loss(newlogprob, entropy, newvalue, mb, args)

    monkeypatch.setattr(module, "ppo_loss", recording_loss)
    env_id = "InvertedPendulum-v4" if module_name == "ppo_continuous" else "CartPole-v1"
    args = module.Args(env_id=env_id, num_envs=2, num_steps=32, num_minibatches=2, update_epochs=2,
                       total_timesteps=192, norm_value=True, cuda=False)  # fmt: skip
    summary = module.train(args)
    first_epoch = batches[: args.num_minibatches]  # every transition of the first rollout, once
    returns = torch.cat([r for r, _ in first_epoch])[torch.cat([v for _, v in first_epoch]).bool()].double()
    assert returns.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert returns.var(unbiased=False).item() == pytest.approx(1.0, rel=1e-4)
    per_update = args.num_minibatches * args.update_epochs  # the first epoch of each update: its rollout, once
    rollouts = [batches[i : i + args.num_minibatches] for i in range(0, len(batches), per_update)]
    assert len(rollouts) == 3
    real_steps = sum(valid.sum().item() for rollout in rollouts for _, valid in rollout)
    assert summary["agent"].return_rms[2].item() == real_steps
    assert summary["agent"].return_rms[0].item() != 0.0  # the statistics moved from their start
