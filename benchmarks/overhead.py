"""Where a step's time goes at CleanRL's defaults (one HalfCheetah env, four CartPole envs).

    python benchmarks/overhead.py        # every part
    python benchmarks/overhead.py 5      # some parts

Prints microseconds per call, each the median of 5 repeats, on one torch thread as the scripts use:
1. The HalfCheetah vector env, one wrapper of `make_envs` added at a time (random actions).
2. The rollout loop's two calls, each timed between calls of the other (they share the CPU's
   caches): an env step, alone and between policy calls; a policy call between env steps, eager
   and compiled (--compile).
3. One policy call: torch.distributions (`get_action_and_value`) and the written-out rollout
   sampler (`sample_action_and_value`), for both scripts.
4. One minibatch update of each script's defaults, eager, split into forward, backward, Adam
   (foreach) and gradient clipping.
5. The whole minibatch update: eager, as the plain path runs it, and as --compile runs it, one
   graph (gradients by torch.func.grad, clipping, torch.optim's functional Adam). The scripts
   build theirs inside train(); this is the same code, outside it. Also, LeanRL-style: the eager
   update as written (backward, clipping, optimizer.step) inside torch.compile.
6. GAE over a 2048-step rollout: compute_gae, and the step-by-step loop it replaced.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from torch.optim.adam import adam

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
    envs = gym.vector.SyncVectorEnv([lambda: gym.make("HalfCheetah-v4")], autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
    layers = [
        ("SyncVectorEnv", lambda e: e),
        ("+ RecordEpisodeStatistics", gym.wrappers.vector.RecordEpisodeStatistics),
        ("+ ClipAction", gym.wrappers.vector.ClipAction),
        ("+ NormalizeObservation", gym.wrappers.vector.NormalizeObservation),
        ("+ clip observations", lambda e: gym.wrappers.vector.TransformObservation(e, lambda o: np.clip(o, -10, 10), e.observation_space)),
        ("+ NormalizeReward", lambda e: gym.wrappers.vector.NormalizeReward(e, gamma=0.99)),
        ("+ clip rewards", lambda e: gym.wrappers.vector.TransformReward(e, lambda r: np.clip(r, -10, 10))),
    ]  # fmt: skip
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


def env_with_policy():
    print("2. HalfCheetah-v4 as make_envs builds it, 1 env: us per env step and per policy call, in the loop")
    args = ppo_continuous.validate_args(ppo_continuous.Args(env_id="HalfCheetah-v4"))
    envs = ppo_continuous.make_envs(args)
    agent = ppo_continuous.Agent(17, 6)
    torch._inductor.config.fallback_random = True  # as the scripts set it for --compile
    policies = {"eager policy": agent.sample_action_and_value, "compiled policy": torch.compile(agent.sample_action_and_value)}
    observation, _ = envs.reset(seed=0)
    for name, policy in [("random actions", None), *policies.items()]:
        env_seconds, policy_seconds, steps = 0.0, 0.0, 4000
        obs = torch.as_tensor(observation, dtype=torch.float32)
        for step in range(-200, steps):  # 200 warm-up steps (and compiling) first
            start = time.perf_counter()
            if policy is not None:
                with torch.inference_mode():
                    action = policy(obs)[0].numpy()
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

        def distributions():
            with torch.inference_mode():
                agent.get_action_and_value(obs)

        def sampler():
            with torch.inference_mode():
                agent.sample_action_and_value(obs)

        print(f"   {name:30s} distributions {microseconds(distributions):6.1f}   sampler {microseconds(sampler):6.1f}")


def minibatch(module, obs_dim, action_shape, size):
    discrete = module is ppo_discrete
    actions = torch.randint(0, action_shape[0], (size, 1)) if discrete else torch.randn(size, action_shape)
    return torch.randn(size, obs_dim), actions, *torch.randn(4, size), torch.ones(size)  # logprobs, advantages, returns, values, valid


def update_pieces():
    print("4. One minibatch update of the plain path, us: its eager pieces")
    for name, (module, obs_dim, action_shape, _, size) in SETUPS.items():
        args = module.validate_args(module.Args())
        agent = module.Agent(obs_dim, action_shape)
        mb_obs, mb_actions, *rest = minibatch(module, obs_dim, action_shape, size)
        optimizer = torch.optim.Adam(agent.parameters(), lr=3e-4, eps=1e-5, foreach=True)

        def forward():
            _, newlogprob, entropy, newvalue = agent.get_action_and_value(mb_obs, mb_actions)
            return module.ppo_loss(newlogprob, entropy, newvalue, *rest, args)[0]

        def forward_backward():
            agent.zero_grad()
            forward().backward()

        forward_backward()
        clip = lambda: torch.nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm, foreach=True)  # noqa: E731
        cost = {"forward": microseconds(forward), "forward+backward": microseconds(forward_backward),
                "Adam (foreach)": microseconds(optimizer.step), "clip": microseconds(clip)}  # fmt: skip
        print(f"   {name:30s} " + "   ".join(f"{key} {value:6.1f}" for key, value in cost.items()))


def whole_updates():
    """The scripts build their update inside train(); this is the same code, outside it."""
    print("5. One whole minibatch update, us: eager (the plain path), one compiled graph (--compile), LeanRL-style")
    for name, (module, obs_dim, action_shape, _, size) in SETUPS.items():
        args = module.validate_args(module.Args())
        agents = [module.Agent(obs_dim, action_shape) for _ in range(3)]
        for other in agents[1:]:
            other.load_state_dict(agents[0].state_dict())
        eager_agent, agent, leanrl_agent = agents
        optimizer = torch.optim.Adam(agent.parameters(), lr=3e-4, eps=1e-5, fused=True)
        for parameter in agent.parameters():
            optimizer.state[parameter] = {"step": torch.zeros(()), "exp_avg": torch.zeros_like(parameter),
                                          "exp_avg_sq": torch.zeros_like(parameter)}  # fmt: skip

        def plain_update(update_agent):
            update_optimizer = torch.optim.Adam(update_agent.parameters(), lr=3e-4, eps=1e-5, foreach=True)

            def update(mb_obs, mb_actions, *rest):
                _, newlogprob, entropy, newvalue = update_agent.get_action_and_value(mb_obs, mb_actions)
                loss, stats = module.ppo_loss(newlogprob, entropy, newvalue, *rest, args)
                update_optimizer.zero_grad()
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(update_agent.parameters(), args.max_grad_norm, foreach=True)
                update_optimizer.step()
                return torch.cat([stats, grad_norm.detach().reshape(1)])

            return update

        eager_update = plain_update(eager_agent)
        leanrl_update = torch.compile(plain_update(leanrl_agent))  # the eager step as written, inside torch.compile

        @torch.compile
        def compiled_update(lr, mb_obs, mb_actions, *rest):
            def loss_of(parameters):
                _, newlogprob, entropy, newvalue = torch.func.functional_call(agent, parameters, (mb_obs, mb_actions))
                return module.ppo_loss(newlogprob, entropy, newvalue, *rest, args)

            parameters = dict(agent.named_parameters())
            grads, stats = torch.func.grad(loss_of, has_aux=True)(parameters)
            grads = list(grads.values())
            grad_norm = torch.nn.utils.get_total_norm(grads)
            clip_coef = torch.clamp(args.max_grad_norm / (grad_norm + 1e-6), max=1.0)
            states = [optimizer.state[parameter] for parameter in parameters.values()]
            with torch.no_grad():
                adam(list(parameters.values()), [grad * clip_coef for grad in grads], [state["exp_avg"] for state in states],
                     [state["exp_avg_sq"] for state in states], [], [state["step"] for state in states], foreach=False,
                     amsgrad=False, beta1=0.9, beta2=0.999, lr=lr, weight_decay=0.0, eps=1e-5, maximize=False)  # fmt: skip
            return torch.cat([stats, grad_norm.reshape(1)])

        batch, lr = minibatch(module, obs_dim, action_shape, size), torch.tensor(3e-4)
        for _ in range(3):  # the same update? three steps of each from the same weights
            eager_update(*batch), compiled_update(lr, *batch)
        difference = max((p - q).abs().max().item() for p, q in zip(agent.parameters(), eager_agent.parameters()))
        eager, compiled = microseconds(lambda: eager_update(*batch)), microseconds(lambda: compiled_update(lr, *batch))
        leanrl_update(*batch)  # compiles
        leanrl = microseconds(lambda: leanrl_update(*batch))
        print(f"   {name:30s} eager {eager:6.1f}   compiled {compiled:6.1f}   LeanRL-style {leanrl:6.1f}   "
              f"(weights after 3 steps of each differ by at most {difference:.1e})")  # fmt: skip


def gae():
    print("6. GAE of a 2048-step, 1-env rollout, ms: compute_gae, and the step-by-step loop it replaced")
    rewards, values = torch.randn(2048, 1), torch.randn(2048, 1)
    next_value, ends, valid = torch.randn(1), (torch.rand(2048, 1) < 0.001).float(), torch.ones(2048, 1)

    def step_by_step():  # CleanRL's loop, with the same masks and truncation handling as compute_gae
        advantages, lastgaelam = torch.zeros_like(rewards), torch.zeros_like(next_value)
        for t in reversed(range(2048)):
            next_values = next_value if t == 2047 else values[t + 1]
            delta = rewards[t] + 0.99 * next_values * (1.0 - ends[t]) - values[t]
            lastgaelam = (delta + 0.99 * 0.95 * (1.0 - ends[t]) * lastgaelam) * valid[t]
            advantages[t] = lastgaelam
        return advantages

    def vectorized():
        return ppo_continuous.compute_gae(rewards, values, next_value, ends, ends, valid, 0.99, 0.95, True)[0]

    assert torch.equal(vectorized(), step_by_step())  # the same numbers
    print(f"   compute_gae {microseconds(vectorized, calls=10) / 1000:6.1f}   step by step {microseconds(step_by_step, calls=10) / 1000:6.1f}")


if __name__ == "__main__":
    parts = [env_layers, env_with_policy, policy_calls, update_pieces, whole_updates, gae]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("parts", nargs="*", type=int, choices=range(1, len(parts) + 1), metavar="PART",
                        help=f"the parts to run, 1 to {len(parts)} (default: all)")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    np.random.seed(0)
    for number in parser.parse_args().parts or range(1, len(parts) + 1):  # e.g. `overhead.py 5`: part 5 alone
        parts[number - 1]()
