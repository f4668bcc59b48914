"""The fast paths learn what the plain path learns (same fixed-seed run, same losses), and run the one policy and
the one update that a researcher edits."""

import importlib
import shutil

import numpy as np
import pytest
import torch
from conftest import interrupting_loss, read_scalars
from torch.distributions import Categorical, Normal

SETUPS = {"ppo_continuous": "Hopper-v4", "ppo_discrete": "CartPole-v1"}
AGENTS = {"ppo_continuous": (11, 3), "ppo_discrete": (4, [2])}  # Agent(obs_dim, actions) of each env
LOSSES = ["losses/value_loss", "losses/policy_loss", "losses/entropy", "losses/approx_kl", "losses/clipfrac"]


@pytest.fixture(autouse=True)
def fresh_compiles():
    """Dynamo keeps each function's compiled versions across train() calls, and past its recompile
    limit (8) runs the function eagerly with only a log line: a compiled test would then compare
    the plain path with itself. Each test starts with none."""
    torch._dynamo.reset()


def logged(module, workdir, monkeypatch, **flags):
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    args = module.Args(env_id=SETUPS[module.__name__], num_envs=2, num_steps=256, num_minibatches=8,
                       update_epochs=4, total_timesteps=4 * 512, **{"cuda": False, **flags})  # fmt: skip
    summary = module.train(args)
    return read_scalars(workdir / "runs" / summary["run_name"])


def assert_same_losses(run, expected):
    """The 4 iterations' losses, at the same steps, within 1e-4 (compiled kernels round differently)."""
    for tag in LOSSES:
        assert [step for step, _ in run[tag]] == [step for step, _ in expected[tag]] and len(run[tag]) == 4, tag
        np.testing.assert_allclose([v for _, v in run[tag]], [v for _, v in expected[tag]], rtol=1e-4, atol=1e-6,
                                   err_msg=tag)  # fmt: skip


def resumed(module, checkpoint_dir, workdir, monkeypatch, **flags):
    """Resume a copy of a run directory; its scalars, the stopped run's and the resumed run's."""
    shutil.copytree(checkpoint_dir, workdir / checkpoint_dir.name)
    monkeypatch.chdir(workdir)
    module.train(module.Args(resume=str(workdir / checkpoint_dir.name / "checkpoint.pt"), **{"cuda": False, **flags}))
    return read_scalars(workdir / checkpoint_dir.name)


ON_CUDA = pytest.param(True, id="cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU"))


@pytest.mark.parametrize("cuda", [pytest.param(False, id="cpu"), ON_CUDA])
@pytest.mark.parametrize("module_name", list(SETUPS))
def test_compile_gives_the_same_losses_as_the_plain_path(module_name, cuda, tmp_path, monkeypatch):
    """Compiled kernels round differently in the last bits, and sampling (normal, multinomial) runs
    the eager ops on the same RNG stream, so over 4 iterations the two runs stay within 1e-4. The
    annealed learning rate is a tensor changed in place: no iteration compiles anything anew."""
    from torch._dynamo.utils import counters

    module = importlib.import_module(module_name)
    plain = logged(module, tmp_path / "plain", monkeypatch, cuda=cuda)
    counters.clear()
    with torch._dynamo.config.patch(error_on_recompile=True):  # a recompile (a guard failed) raises
        compiled = logged(module, tmp_path / "compiled", monkeypatch, compile=True, cuda=cuda)
    assert counters["stats"]["unique_graphs"] > 0  # the paths were compiled
    assert_same_losses(compiled, plain)
    returns = [[v for _, v in run["charts/episodic_return"]] for run in (plain, compiled)]
    np.testing.assert_allclose(returns[1], returns[0], rtol=1e-4)


@pytest.mark.parametrize("devices", [pytest.param((False, False), id="cpu"),
                                     pytest.param((True, False), id="cuda-to-cpu", marks=ON_CUDA.marks),
                                     pytest.param((False, True), id="cpu-to-cuda", marks=ON_CUDA.marks)])  # fmt: skip
@pytest.mark.parametrize("first_compiled", [True, False], ids=["compiled-checkpoint", "plain-checkpoint"])
@pytest.mark.parametrize("module_name", list(SETUPS))
def test_checkpoint_resumes_alike_compiled_or_plain(module_name, first_compiled, devices, tmp_path, monkeypatch):
    """--compile's update takes Adam's steps on the optimizer's own state, so a checkpoint holds the
    moments and step count whichever path wrote it: stopped after iteration 2, then resumed compiled
    or plain, the run takes the same steps (losses within 1e-4). A compiled update that started from
    fresh moments, or a compiled run that saved none, would not. With a GPU, the same across devices:
    a checkpoint written on one resumes on the other, compiled or plain."""
    module = importlib.import_module(module_name)
    first_on_cuda, resume_on_cuda = devices
    with monkeypatch.context() as patch:  # Ctrl-C during iteration 2: it finishes, saves and stops
        patch.setattr(module, "compute_gae", interrupting_loss(module.compute_gae, 2))
        first = logged(module, tmp_path / "first", monkeypatch, compile=first_compiled, checkpoint_every=1,
                       cuda=first_on_cuda)  # fmt: skip
    [run_dir] = (tmp_path / "first" / "runs").iterdir()
    saved = module.load_checkpoint(str(run_dir / "checkpoint.pt"))
    assert saved["iteration"] == 2 and len(first["losses/value_loss"]) == 2
    moments = saved["optimizer"]["state"].values()
    parameters = [name for name in saved["agent"] if name != "return_rms"]  # the one buffer has no Adam state
    assert len(moments) == len(parameters)  # every parameter has Adam's state (all() of none would pass)
    assert all(state["step"].item() == 2 * 4 * 8 for state in moments)  # 64 Adam steps
    compiled = resumed(module, run_dir, tmp_path / "compiled", monkeypatch, compile=True, cuda=resume_on_cuda)
    plain = resumed(module, run_dir, tmp_path / "plain", monkeypatch, cuda=resume_on_cuda)
    assert_same_losses(compiled, plain)


@pytest.mark.parametrize("module_name", list(SETUPS))
def test_cudagraphs_mark_every_input_the_graphs_mutate_static(module_name, tmp_path, monkeypatch):
    """CUDA graph trees replay a graph only if each input it updates in place (the parameters, Adam's
    moments and step counts) is static, at one address for good; otherwise they run it without a CUDA
    graph, with only a log line. Inductor makes the same graphs on CPU and then skips CUDA graphs for
    the device, so this checks without a GPU that every input a graph mutates is static (the optimizer's
    step mutates 4 per parameter; gradient clipping, the gradients)."""
    import torch._inductor.compile_fx as compile_fx

    module = importlib.import_module(module_name)
    validate_args, compile_graph, graphs = module.validate_args, compile_fx._compile_fx_inner, []

    def without_the_cuda_check(args):  # --cudagraphs refuses to start without CUDA
        args.cudagraphs = False
        args = validate_args(args)
        args.cudagraphs = True
        return args

    def recording(graph_module, example_inputs, **kwargs):  # each graph's mutated and static inputs
        inputs = list(graph_module.graph.find_nodes(op="placeholder"))
        mutated = {inputs.index(node.args[0]) for node in graph_module.graph.nodes
                   if node.target is torch.ops.aten.copy_.default and node.args[0] in inputs}  # fmt: skip
        graphs.append((mutated, set(kwargs["static_input_idxs"])))
        return compile_graph(graph_module, example_inputs, **kwargs)

    monkeypatch.setattr(module, "validate_args", without_the_cuda_check)
    monkeypatch.setattr(compile_fx, "_compile_fx_inner", recording)
    with (torch._inductor.config.patch(fx_graph_cache=False),  # every graph compiled afresh, through `recording`
          torch._functorch.config.patch(enable_autograd_cache=False)):  # fmt: skip
        logged(module, tmp_path / "run", monkeypatch, compile=True, cudagraphs=True)
    num_parameters = len(list(module.Agent(*AGENTS[module_name]).parameters()))
    assert 4 * num_parameters in [len(mutated) for mutated, _ in graphs]  # Adam's step: parameters, moments, counts
    for mutated, static in graphs:
        assert mutated <= static


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("module_name", list(SETUPS))
def test_cudagraphs_give_the_same_losses_as_compile_alone(module_name, tmp_path, monkeypatch):
    """Replaying the compiled graphs as CUDA graphs launches the same kernels on the same RNG stream:
    fixed-seed losses within 1e-4 of --compile's, and no graph left out of CUDA graphs."""
    from torch._dynamo.utils import counters

    module = importlib.import_module(module_name)
    compiled = logged(module, tmp_path / "compiled", monkeypatch, compile=True, cuda=True)
    counters.clear()
    graphed = logged(module, tmp_path / "graphed", monkeypatch, compile=True, cudagraphs=True, cuda=True)
    assert counters["inductor"]["cudagraph_skips"] == 0 and not counters["graph_break"]
    assert_same_losses(graphed, compiled)


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


def shifted_policy(module):
    """get_action_and_value rewritten as a researcher would: the continuous policy's mean moved by +3, the discrete
    policy's first logit (of CartPole's two) raised by 3, so that it picks action 0 far more often. It computes the
    entropy and the value also for the rollout, which needs neither (the scripts' own policy skips them there)."""

    def continuous(self, x, action=None, deterministic=False, act_only=False):
        action_mean = self.actor_mean(x) + 3.0
        probs = Normal(action_mean, self.actor_logstd.expand_as(action_mean).exp())
        action = (action_mean if deterministic else probs.sample()) if action is None else action
        return action, probs.log_prob(action).sum(1), probs.entropy().sum(1), self.get_value(x)

    def discrete(self, x, action=None, deterministic=False, act_only=False):
        probs = Categorical(logits=self.actor(x) + torch.tensor([3.0, 0.0]))
        action = (probs.logits.argmax(-1) if deterministic else probs.sample()) if action is None else action[:, 0]
        return action[:, None], probs.log_prob(action), probs.entropy(), self.get_value(x)

    return continuous if module.__name__ == "ppo_continuous" else discrete


@pytest.mark.parametrize("compile_", [False, True], ids=["plain", "compiled"])
@pytest.mark.parametrize("module_name", list(SETUPS))
def test_an_edited_policy_is_the_one_the_rollout_samples_and_the_loss_scores(module_name, compile_, tmp_path,
                                                                              monkeypatch):  # fmt: skip
    """Edit get_action_and_value alone: the rollout's actions come from the edited policy, and the loss scores them
    with it too, so the first minibatch of every update sees ratio 1 (a second copy of the policy's maths in the
    rollout would sample the old one: actions near 0 and a large approx_kl). Edit get_value too (+1): the rollout's
    values, which it gives once over the whole rollout, are the edited critic's values of the minibatch's own
    observations (the loss's newvalue on the first minibatch)."""
    module = importlib.import_module(module_name)
    monkeypatch.setattr(module.Agent, "get_action_and_value", shifted_policy(module))
    monkeypatch.setattr(module.Agent, "get_value", lambda self, x: self.critic(x) + 1.0)
    real_loss, calls = module.ppo_loss, []

    def recording_loss(newlogprob, entropy, newvalue, mb, args):
        loss, stats = real_loss(newlogprob, entropy, newvalue, mb, args)
        value_error = (newvalue.view(-1) - mb["values"]).abs().max().item()
        calls.append(
            ((newlogprob - mb["logprobs"]).abs().max().item(), mb["actions"].float().mean().item(), value_error)
        )
        return loss, stats

    monkeypatch.setattr(module, "ppo_loss", recording_loss)
    logged(module, tmp_path / "run", monkeypatch, compile=compile_)
    per_update = 4 * 8
    first_minibatches = calls[::per_update]
    assert len(calls) == 4 * per_update
    assert all(max_logratio < 1e-4 for max_logratio, _, _ in first_minibatches)  # ratio 1: the same policy
    assert all(value_error < 1e-5 for _, _, value_error in first_minibatches)  # the same critic, the same steps
    mean_action = np.mean([mean for _, mean, _ in calls])
    # continuous: the mean action near +3 (not 0); discrete: action 0 nearly always (CartPole's others are 1)
    assert mean_action > 2.0 if module_name == "ppo_continuous" else mean_action < 0.2


@pytest.mark.parametrize("module_name", list(SETUPS))
def test_each_epoch_updates_on_every_transition_once_in_a_new_order(module_name, tmp_path, monkeypatch):
    """An epoch's minibatches (slices of the batch shuffled once per epoch) split the rollout's batch: every
    transition, with its own action, log-prob, advantage, return, value and mask, exactly once; each epoch in
    another order. Fails on overlapping slices, a field shuffled apart from the others, or one order for all."""
    module = importlib.import_module(module_name)
    real_loss, minibatches = module.ppo_loss, []

    def recording_loss(newlogprob, entropy, newvalue, mb, args):
        fields = [mb[name].float().view(len(mb["obs"]), -1) for name in ("actions", "logprobs", "advantages",
                                                                         "returns", "values", "valid")]  # fmt: skip
        minibatches.append(torch.cat([mb["obs"], *fields], 1).detach().clone())
        return real_loss(newlogprob, entropy, newvalue, mb, args)

    monkeypatch.setattr(module, "ppo_loss", recording_loss)
    logged(module, tmp_path / "run", monkeypatch)  # 4 iterations of 4 epochs of 8 minibatches of 64 transitions
    assert len(minibatches) == 4 * 4 * 8 and all(len(rows) == 64 for rows in minibatches)
    epochs = torch.stack([torch.cat(minibatches[i : i + 8]) for i in range(0, len(minibatches), 8)]).view(4, 4, 512, -1)
    for iteration in epochs:
        transitions = torch.unique(iteration[0], dim=0)  # sorted, without repeats
        assert len(transitions) == 512
        for epoch in iteration[1:]:
            assert torch.equal(torch.unique(epoch, dim=0), transitions)  # the same 512 whole transitions
            assert not torch.equal(epoch, iteration[0])  # in another order
    assert not torch.equal(torch.unique(epochs[0, 0], dim=0), torch.unique(epochs[1, 0], dim=0))  # a new batch


@pytest.mark.parametrize("compile_", [False, True], ids=["plain", "compiled"])
@pytest.mark.parametrize("module_name", list(SETUPS))
def test_an_extra_loss_term_reaches_the_gradient_and_the_logs(module_name, compile_, tmp_path, monkeypatch):
    """Add a term to ppo_loss, computed from a layer of the agent, with a debug scalar of its own: the plain and the
    compiled update both step on its gradient, and TensorBoard gets its scalar by name."""
    module = importlib.import_module(module_name)
    real_loss, real_policy, agents = module.ppo_loss, module.Agent.get_action_and_value, []

    def remembering_policy(self, *args, **kwargs):  # the agent whose layer the extra term reads
        agents[:] = [self]
        return real_policy(self, *args, **kwargs)

    def loss_with_extra_term(newlogprob, entropy, newvalue, mb, args):
        loss, stats = real_loss(newlogprob, entropy, newvalue, mb, args)
        extra = 1e3 * agents[0].critic[0].bias.sum()  # pushes the critic's first biases down, hard
        return loss + extra, {**stats, "extra_term": extra.detach()}

    monkeypatch.setattr(module.Agent, "get_action_and_value", remembering_policy)
    monkeypatch.setattr(module, "ppo_loss", loss_with_extra_term)
    run = logged(module, tmp_path / "run", monkeypatch, compile=compile_)
    assert len(run["losses/extra_term"]) == 4
    # the biases start at 0; each Adam step moves them by about the learning rate, against the extra gradient
    final_bias = agents[0].critic[0].bias.detach()
    assert (final_bias < -50 * module.Args().learning_rate).all()


def reference_policy(agent, x, action=None):
    """The same agent's networks through torch.distributions, as CleanRL writes the policy."""
    if hasattr(agent, "actor_mean"):
        action_mean = agent.actor_mean(x)
        probs = Normal(action_mean, agent.actor_logstd.expand_as(action_mean).exp())
        action = probs.sample() if action is None else action
        return action, probs.log_prob(action).sum(1), probs.entropy().sum(1)
    dimensions = [Categorical(logits=part) for part in torch.split(agent.actor(x), agent.nvec, dim=-1)]
    action = torch.stack([d.sample() for d in dimensions], -1) if action is None else action
    logprob = sum(d.log_prob(a) for d, a in zip(dimensions, action.unbind(-1)))
    return action, logprob, sum(d.entropy() for d in dimensions)


POLICIES = {"normal": ("ppo_continuous", 3), "categorical": ("ppo_discrete", [2]),
            "multidiscrete": ("ppo_discrete", [3, 4, 2])}  # fmt: skip


@pytest.mark.parametrize("module_name,actions", list(POLICIES.values()), ids=list(POLICIES))
def test_the_written_out_policy_is_torch_distributions_to_the_last_bit(module_name, actions):
    """get_action_and_value writes the Gaussian and the categoricals out (no Distribution objects, faster), in
    torch's own order of operations: the same draws from the same seed, the same log-probs and entropies, and the
    same gradients, bit for bit, so a fixed-seed run gives the numbers that torch.distributions gives."""
    module = importlib.import_module(module_name)
    torch.manual_seed(0)
    agent = module.Agent(5, actions)
    with torch.no_grad():  # away from the initial near-uniform policy: logits and stds of several sizes
        for parameter in agent.parameters():
            parameter.add_(torch.randn_like(parameter))
    obs = torch.randn(64, 5)
    with torch.inference_mode():  # a sample, its log-prob, the entropy; then the rollout's call (act_only)
        torch.manual_seed(1)
        ours = agent.get_action_and_value(obs)[:3]
        torch.manual_seed(1)
        reference = reference_policy(agent, obs)
        torch.manual_seed(1)
        acting = agent.get_action_and_value(obs, act_only=True)
    for name, got, expected in zip(("action", "logprob", "entropy"), ours, reference):
        assert torch.equal(got, expected), name
    assert torch.equal(acting[0], ours[0]) and torch.equal(acting[1], ours[1]) and acting[2:] == (None, None)
    assert not agent.get_action_and_value(obs)[0].requires_grad  # no gradient through a draw, as from sample()

    def gradients(policy):  # the update's call: the stored actions scored, then differentiated
        agent.zero_grad()
        logprob, entropy = policy(ours[0].clone())  # (a copy, as the rollout stores it)
        (logprob.sum() + 0.01 * entropy.sum()).backward()
        return [parameter.grad.clone() for parameter in agent.parameters() if parameter.grad is not None]

    got = gradients(lambda action: agent.get_action_and_value(obs, action)[1:3])
    expected = gradients(lambda action: reference_policy(agent, obs, action)[1:])
    assert len(got) > 0 and all(torch.equal(g, e) for g, e in zip(got, expected, strict=True))
