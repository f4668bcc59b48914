"""Where a step's time goes at CleanRL's defaults (one HalfCheetah env, four CartPole envs).

    python benchmarks/overhead.py        # every part
    python benchmarks/overhead.py 5      # some parts

Prints microseconds per call, each the median of 5 repeats, on one torch thread as the scripts use:
1. The HalfCheetah vector env, one of gymnasium's wrappers added at a time, then `make_envs` (random actions).
2. The rollout loop's two calls, each timed between calls of the other (they share the CPU's
   caches): an env step, alone and between policy calls; a policy call between env steps, eager
   and compiled (--compile).
3. One rollout policy call (`Agent.get_action_and_value(obs, act_only=True)` under inference mode: the action
   and its log-prob, no entropy and no critic), for both scripts; and the full call the loss makes.
4. One minibatch update of each script's defaults, eager, split into forward, backward, Adam
   (foreach, as the scripts step it; and fused, the kernel they leave alone: it differs in the
   last bits) and gradient clipping (of agent.parameters(), as the scripts clip; and of a list of them).
5. The whole minibatch update (`update_minibatch`), eager as the plain path runs it, compiled as
   --compile runs it (without inductor's size checks, gradient clipping's norms per tensor, the grads set to
   None in the graph), and compiled with one of those as it was: inductor's default size checks, clipping's
   foreach norms as the plain path takes them, `optimizer.zero_grad()` (the compiled ones alternating, 9
   repeats each).
6. GAE over a 2048-step rollout: compute_gae (numpy), and the same loop in torch.
7. Python's garbage collector: one HalfCheetah iteration (2,048 steps), the whole process from start to exit,
   plain and --compile, as the scripts run (gc.freeze() before the loop and at the end), and with gc.freeze()
   made a no-op; median of 3 runs each, seconds. Slow (about 2 minutes).
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import ppo_continuous  # noqa: E402
import ppo_discrete  # noqa: E402


def microseconds(call, repeats: int = 5, calls: int = 500) -> float:
    for _ in range(50):  # warm-up
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            call()
        times.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(times)


def env_layers():
    print("1. HalfCheetah-v4, 1 env: us per vector step, one wrapper added at a time")
    vector = gym.vector.SyncVectorEnv
    envs = vector([lambda: gym.make("HalfCheetah-v4")], autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
    clip = lambda x: np.clip(x, -10, 10)  # noqa: E731
    layers = [
        ("SyncVectorEnv", lambda e: e),
        ("+ RecordEpisodeStatistics", gym.wrappers.vector.RecordEpisodeStatistics),
        ("+ clip actions", lambda e: gym.wrappers.vector.TransformAction(e, lambda a: np.clip(a, -1, 1))),
        ("+ NormalizeObservation", gym.wrappers.vector.NormalizeObservation),
        ("+ clip observations", lambda e: gym.wrappers.vector.TransformObservation(e, clip, e.observation_space)),
        ("+ NormalizeReward", lambda e: gym.wrappers.vector.NormalizeReward(e, gamma=0.99)),
        ("+ clip rewards", lambda e: gym.wrappers.vector.TransformReward(e, clip)),
    ]
    single = gym.make("HalfCheetah-v4")
    single.reset(seed=0)
    action = single.action_space.sample()
    print(f"   {'one env, no vector env':28s} {microseconds(lambda: single.step(action), calls=2000):7.1f}")
    for name, wrap in layers:
        envs = wrap(envs)
        envs.reset(seed=0)
        actions = envs.action_space.sample()
        print(f"   {name:28s} {microseconds(lambda: envs.step(actions), calls=2000):7.1f}")
    envs.close()
    envs = ppo_continuous.make_envs(ppo_continuous.validate_args(ppo_continuous.Args(env_id="HalfCheetah-v4")))
    envs.reset(seed=0)  # the same wrappers, with the script's RunningMeanStd (its single-row update)
    print(f"   {'make_envs (the script)':28s} {microseconds(lambda: envs.step(actions), calls=2000):7.1f}")
    envs.close()


def env_with_policy():
    print("2. HalfCheetah-v4 as make_envs builds it, 1 env: us per env step and per policy call, in the loop")
    args = ppo_continuous.validate_args(ppo_continuous.Args(env_id="HalfCheetah-v4"))
    envs = ppo_continuous.make_envs(args)
    agent = ppo_continuous.Agent(17, 6)
    torch._inductor.config.fallback_random = True  # as the scripts set them for --compile
    torch._inductor.config.size_asserts = False
    policy = agent.get_action_and_value
    policies = {"eager policy": policy, "compiled policy": torch.compile(policy)}
    observation, _ = envs.reset(seed=0)
    for name, policy in [("random actions", None), *policies.items()]:
        env_seconds, policy_seconds, steps = 0.0, 0.0, 4000
        obs = torch.as_tensor(observation, dtype=torch.float32)
        for step in range(-200, steps):  # 200 warm-up steps (and compiling) first
            start = time.perf_counter()
            if policy is not None:
                with torch.inference_mode():
                    action = policy(obs, act_only=True)[0].numpy()
            else:
                action = np.random.uniform(-1, 1, (1, 6)).astype(np.float32)
            env_start = time.perf_counter()
            observation, *_ = envs.step(action)
            if step >= 0:
                env_seconds += time.perf_counter() - env_start
                policy_seconds += env_start - start
            obs = torch.as_tensor(observation, dtype=torch.float32)
        calls = f"   policy call {policy_seconds / steps * 1e6:7.1f}" if policy is not None else ""
        print(f"   {'with ' + name:28s} env step {env_seconds / steps * 1e6:7.1f}{calls}")
    envs.close()


SETUPS = {  # name: (script module, obs dim, action shape, envs in the rollout, minibatch size at its defaults)
    "ppo_continuous (HalfCheetah)": (ppo_continuous, 17, 6, 1, 64),
    "ppo_discrete (CartPole)": (ppo_discrete, 4, [2], 4, 128),
}


def policy_calls():
    print("3. One rollout policy call, us")
    for name, (module, obs_dim, action_shape, num_envs, _) in SETUPS.items():
        agent, obs = module.Agent(obs_dim, action_shape), torch.randn(num_envs, obs_dim)

        def call(act_only: bool):
            with torch.inference_mode():
                agent.get_action_and_value(obs, act_only=act_only)

        rollout, full = microseconds(lambda: call(True)), microseconds(lambda: call(False))
        print(f"   {name:30s} rollout {rollout:6.1f}   with the entropy and the critic {full:6.1f}")


def minibatch(module, obs_dim, action_shape, size) -> dict:
    discrete = module is ppo_discrete
    actions = torch.randint(0, action_shape[0], (size, 1)) if discrete else torch.randn(size, action_shape)
    logprobs, advantages, returns, values = torch.randn(4, size)
    return dict(obs=torch.randn(size, obs_dim), actions=actions, logprobs=logprobs, advantages=advantages,
                returns=returns, values=values, valid=torch.ones(size))  # fmt: skip


def update_pieces():
    print("4. One minibatch update of the plain path, us: its eager pieces")
    for name, (module, obs_dim, action_shape, _, size) in SETUPS.items():
        args = module.validate_args(module.Args())
        agent = module.Agent(obs_dim, action_shape)
        mb = minibatch(module, obs_dim, action_shape, size)
        optimizer = torch.optim.Adam(agent.parameters(), lr=3e-4, eps=1e-5, foreach=True)
        fused = torch.optim.Adam(module.Agent(obs_dim, action_shape).parameters(), lr=3e-4, eps=1e-5, fused=True)

        def forward():
            _, newlogprob, entropy, newvalue = agent.get_action_and_value(mb["obs"], mb["actions"])
            return module.ppo_loss(newlogprob, entropy, newvalue, mb, args)[0]

        def forward_backward():
            agent.zero_grad()
            forward().backward()

        forward_backward()
        for parameter, twin in zip(agent.parameters(), fused.param_groups[0]["params"]):
            twin.grad = parameter.grad.clone()
        clip = lambda: torch.nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm, foreach=True)  # noqa: E731
        params = list(agent.parameters())  # the optimizer's list, which CUDA graphs cannot take (docs/speed.md)
        clip_list = lambda: torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm, foreach=True)  # noqa: E731
        cost = {"forward": microseconds(forward), "forward+backward": microseconds(forward_backward),
                "Adam (foreach)": microseconds(optimizer.step), "Adam (fused)": microseconds(fused.step),
                "clip": microseconds(clip), "clip (a list)": microseconds(clip_list)}  # fmt: skip
        print(f"   {name:30s} " + "   ".join(f"{key} {value:6.1f}" for key, value in cost.items()))


def copy_of(module, edit: tuple[str, str] | None = None):
    """The script imported once more, under a new name: functions of their own (their own compiled graphs);
    `edit`: (old, new), a piece of its source replaced first."""
    copy_of.count = getattr(copy_of, "count", 0) + 1
    name, source = f"{module.__name__}_{copy_of.count}", Path(module.__file__).read_text()
    if edit is not None:
        assert edit[0] in source, f"{module.__file__} no longer has {edit[0]!r}: update this benchmark"
        source = source.replace(*edit)
    sys.modules[name] = copy = type(sys)(name)  # (registered, as an import would: dataclasses look it up)
    copy.__file__ = module.__file__
    exec(compile(source, module.__file__, "exec"), vars(copy))
    return copy


ZERO_GRAD = (  # the update's grads set to None in its loop, or by optimizer.zero_grad() (which dynamo skips)
    "    for parameter in agent.parameters():  # zero_grad(); compiled, the optimizer's would break the graph\n"
    "        parameter.grad = None\n",
    "    optimizer.zero_grad()\n",
)


def whole_updates():
    print(
        "5. One whole minibatch update (update_minibatch), us: eager (the plain path), compiled (--compile), and "
        "compiled with one thing as it was: inductor's size checks (its default), foreach norms in gradient clipping "
        "(as the plain path takes them), optimizer.zero_grad() (a graph break)"
    )
    for name, (module, obs_dim, action_shape, _, size) in SETUPS.items():
        args, mb = module.validate_args(module.Args()), minibatch(module, obs_dim, action_shape, size)
        compiled_args = replace(args, compile=True)  # (args.compile picks clipping's norms: foreach when False)

        # each compiled one from a copy of the script of its own: dynamo keeps its graphs by function, and would
        # otherwise check each call against the other variants' guards first
        def compiled(edit=None, size_asserts=False):  # the update of a copy of the script (`edit`ed), compiled
            return torch.compile(copy_of(module, edit).update_minibatch, options=dict(size_asserts=size_asserts))

        variants = {  # name: (update function, its args)
            "compiled": (compiled(), compiled_args),
            "with size checks": (compiled(size_asserts=True), compiled_args),
            "with foreach norms": (compiled(), args),
            "with optimizer.zero_grad()": (compiled(ZERO_GRAD), compiled_args),
        }
        agents = [module.Agent(obs_dim, action_shape) for _ in range(1 + len(variants))]  # eager, then the compiled
        for agent in agents[1:]:
            agent.load_state_dict(agents[0].state_dict())
        optimizers = [torch.optim.Adam(agents[0].parameters(), lr=3e-4, eps=1e-5, foreach=True)] + [
            torch.optim.Adam(agent.parameters(), lr=torch.tensor(3e-4), eps=1e-5, foreach=True, capturable=True)
            for agent in agents[1:]
        ]  # as train() makes them, plain and compiled (each compiled update its own agent: its own graphs)
        eager = lambda: module.update_minibatch(agents[0], optimizers[0], mb, args)  # noqa: E731
        calls = [lambda i=i, update=update, a=a: update(agents[i], optimizers[i], mb, a)
                 for i, (update, a) in enumerate(variants.values(), start=1)]  # fmt: skip
        for _ in range(3):  # the same update? three steps of each from the same weights
            eager(), [call() for call in calls]
        pairs = [pair for agent in agents[1:] for pair in zip(agents[0].parameters(), agent.parameters())]
        difference = max((p - q).abs().max().item() for p, q in pairs)
        rounds = [[microseconds(call, 1) for call in calls] for _ in range(9)]  # alternating: the VM drifts
        times = "   ".join(f"{key} {statistics.median(column):6.1f}" for key, column in zip(variants, zip(*rounds)))
        print(f"   {name:30s} eager {microseconds(eager):6.1f}   {times}   (weights after 3 steps of eager and each "
              f"compiled differ by at most {difference:.1e})")  # fmt: skip


def gae():
    print("6. GAE of a 2048-step, 1-env rollout, ms: compute_gae (numpy), and the same loop in torch")
    rng = np.random.default_rng(0)
    rewards, values = rng.normal(size=(2048, 1)).astype(np.float32), rng.normal(size=(2048, 1)).astype(np.float32)
    next_value, ends = rng.normal(size=1).astype(np.float32), (rng.random((2048, 1)) < 0.001).astype(np.float32)
    valid = np.ones((2048, 1), np.float32)
    arrays = (rewards, values, next_value, ends, ends, valid)
    tensors = [torch.as_tensor(array) for array in arrays]

    def in_torch():  # the numpy code, with torch ops
        t_rewards, t_values, t_next, t_ends, _, t_valid = tensors
        next_values = torch.cat([t_values[1:], t_next.reshape(1, -1)])
        deltas = t_rewards + 0.99 * next_values * (1.0 - t_ends) - t_values
        decays = 0.99 * 0.95 * (1.0 - t_ends)
        advantages, lastgaelam = torch.zeros_like(t_rewards), torch.zeros_like(t_next)
        for t in reversed(range(2048)):
            lastgaelam = (deltas[t] + decays[t] * lastgaelam) * t_valid[t]
            advantages[t] = lastgaelam
        return advantages

    def in_numpy():
        return ppo_continuous.compute_gae(*arrays, 0.99, 0.95, True)[0]

    assert np.array_equal(in_numpy(), in_torch().numpy())  # the same numbers
    numpy_ms, torch_ms = microseconds(in_numpy, calls=10) / 1000, microseconds(in_torch, calls=10) / 1000
    print(f"   compute_gae (numpy) {numpy_ms:6.1f}   torch {torch_ms:6.1f}")


def garbage_collector():
    print(
        "7. One HalfCheetah iteration, whole process (start to exit), s: with gc.freeze() as the scripts call it, "
        "and without (a no-op)"
    )
    run = "import gc, runpy, sys; {}sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
    script = str(Path(__file__).resolve().parent.parent / "ppo_continuous.py")
    flags = ["--total-timesteps", "2048", "--no-save-model", "--no-cuda"]
    with tempfile.TemporaryDirectory() as folder:  # the runs' logs
        for extra in ([], ["--compile"]):
            times = {"frozen": [], "not frozen": []}
            for repeat in range(4):  # the first round warms the caches (files, torch's compiled graphs) and is dropped
                for name, patch in (("frozen", ""), ("not frozen", "gc.freeze = lambda: None; ")):
                    start = time.perf_counter()
                    command = [sys.executable, "-c", run.format(patch), script, *flags, *extra]
                    subprocess.run(command, cwd=folder, check=True, capture_output=True)
                    times[name] += [time.perf_counter() - start] if repeat else []
            medians = "   ".join(f"{name} {statistics.median(values):5.2f}" for name, values in times.items())
            print(f"   {' '.join(extra) or 'plain':30s} {medians}")


if __name__ == "__main__":
    parts = [env_layers, env_with_policy, policy_calls, update_pieces, whole_updates, gae, garbage_collector]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("parts", nargs="*", type=int, metavar="PART",
                        help=f"the parts to run, 1 to {len(parts)} (default: all)")  # fmt: skip
    chosen = parser.parse_args().parts or range(1, len(parts) + 1)  # (choices= would refuse no parts at all)
    if not set(chosen) <= set(range(1, len(parts) + 1)):
        parser.error(f"PART must be 1 to {len(parts)}, got {chosen}")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    np.random.seed(0)
    for part in chosen:
        parts[part - 1]()
