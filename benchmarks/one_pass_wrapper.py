"""Would one vector wrapper of our own pay for its lines? gymnasium's wrappers, as the scripts use them, or one pass.

    python benchmarks/one_pass_wrapper.py              # HalfCheetah-v4
    python benchmarks/one_pass_wrapper.py --env-id Hopper-v4 --iterations 4
    python benchmarks/one_pass_wrapper.py --num-envs 8 --iterations 1     # several envs' rows per update

`make_envs` in each script stacks CleanRL's gymnasium vector wrappers (episode statistics, action clipping,
observation normalization, observation clipping, reward normalization, reward clipping), with one change: its
normalizers' running statistics are the script's `RunningMeanStd`, which writes out np.mean's and np.var's
arithmetic (the same numbers). Three stacks: gymnasium's own (`gymnasium_make_envs`, the reference the
tests compare the scripts with), the script's, and `OnePass` below, one wrapper that does the same six things in
one pass with gymnasium's arithmetic. This file:

1. Checks the same numbers: the three step the same random actions (episode ends included) and give identical
   observations, rewards, flags, episode statistics and running statistics.
2. Times a vector step under random actions, each stack (microseconds, median of 5).
3. Times whole training: `ppo_continuous.train` at its defaults for a few iterations with each stack,
   alternating, three rounds; the fastest of each, and whether all runs gave the same returns.
"""

import argparse
import os
import statistics
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


def gymnasium_make_envs(module, args, video_folder=None, evaluation=False):
    """`module.make_envs` with gymnasium's wrappers as they are (training envs only: no video, no evaluation)."""
    assert video_folder is None and not evaluation and not args.async_envs and not getattr(args, "rescale_actions", 0)
    thunks = [module.make_env(args, i, {}) for i in range(args.num_envs)]
    envs = gym.vector.SyncVectorEnv(thunks, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
    envs = gym.wrappers.vector.RecordEpisodeStatistics(envs)
    if isinstance(envs.single_action_space, gym.spaces.Box):
        envs = gym.wrappers.vector.ClipAction(envs)
    if args.norm_obs:
        envs = gym.wrappers.vector.NormalizeObservation(envs)
        clip_obs = lambda obs: np.clip(obs, -args.clip_obs, args.clip_obs)  # noqa: E731
        envs = gym.wrappers.vector.TransformObservation(envs, clip_obs, envs.observation_space)
    if args.norm_reward:
        envs = gym.wrappers.vector.NormalizeReward(envs, gamma=args.gamma)
        clip_reward = lambda reward: np.clip(reward, -args.clip_reward, args.clip_reward)  # noqa: E731
        envs = gym.wrappers.vector.TransformReward(envs, clip_reward)
    return envs


class OnePass(gym.vector.VectorWrapper):
    """gymnasium's vector RecordEpisodeStatistics, ClipAction (Box actions), NormalizeObservation and NormalizeReward,
    each normalization clipped, in one wrapper with their arithmetic: the same numbers to the last bit."""

    def __init__(self, envs, args):
        super().__init__(envs)
        self.args, self.update_running_mean, n, shape = args, True, envs.num_envs, envs.single_observation_space.shape
        if args.norm_obs:  # float32 observations, as gymnasium's
            self.single_observation_space = gym.spaces.Box(-np.inf, np.inf, shape)
            self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, n)
            self.obs_rms = ppo_continuous.RunningMeanStd(shape=shape, dtype=np.float32)
        if args.norm_reward:  # (the statistics are attributes only where on, as in gymnasium's chain)
            self.return_rms = ppo_continuous.RunningMeanStd(shape=())
        self.clip = isinstance(envs.single_action_space, gym.spaces.Box)
        # raw episode returns and lengths, and the discounted return in float32: gymnasium's dtypes, its rounding
        self.returns, self.lengths, self.discounted = np.zeros(n), np.zeros(n, int), np.zeros(n, np.float32)
        self.prev_dones = np.zeros(n, bool)  # NEXT_STEP autoreset: an env done at the last step resets at this one

    def reset(self, **kwargs):
        obs, infos = self.env.reset(**kwargs)
        self.returns[:], self.lengths[:], self.discounted[:], self.prev_dones[:] = 0, 0, 0, False
        return self.normalize(obs), infos

    def update(self, rms, x):  # the script's RunningMeanStd.update (gymnasium's numbers, at less cost)
        if self.update_running_mean:
            rms.update(x)

    def normalize(self, obs):
        if self.args.norm_obs:
            self.update(self.obs_rms, obs)
            obs = ((obs - self.obs_rms.mean) / np.sqrt(self.obs_rms.var + 1e-8)).astype(np.float32)
            obs = np.clip(obs, -self.args.clip_obs, self.args.clip_obs)
        return obs

    def step(self, actions):
        if self.clip:
            actions = np.clip(actions, self.action_space.low, self.action_space.high)
        obs, rewards, terminations, truncations, infos = self.env.step(actions)
        reset, dones, args = self.prev_dones, terminations | truncations, self.args  # a reset step counts for nothing
        self.returns, self.lengths = np.where(reset, 0, self.returns + rewards), np.where(reset, 0, self.lengths + 1)
        if dones.any():
            infos["episode"] = {"r": np.where(dones, self.returns, 0.0), "l": np.where(dones, self.lengths, 0)}
            infos["_episode"] = dones
        self.prev_dones = dones
        if args.norm_reward:  # by the running std of the discounted return
            discounted = self.discounted * args.gamma * (1 - terminations) + rewards
            self.discounted[:] = np.where(reset, self.discounted, discounted)
            if not reset.all():
                self.update(self.return_rms, self.discounted[~reset])
            rewards = np.clip(rewards / np.sqrt(self.return_rms.var + 1e-8), -args.clip_reward, args.clip_reward)
        return self.normalize(obs), rewards, terminations, truncations, infos


def one_pass_make_envs(module, args, video_folder=None, evaluation=False):
    """`module.make_envs` with OnePass in place of the wrappers (training envs only)."""
    assert video_folder is None and not evaluation and not args.async_envs and not getattr(args, "rescale_actions", 0)
    thunks = [module.make_env(args, i, {}) for i in range(args.num_envs)]
    return OnePass(gym.vector.SyncVectorEnv(thunks, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP), args)


def same_numbers(module, args, steps: int, seed: int = 0) -> int:
    """Step gymnasium's stack, the script's and OnePass with the same random actions (Box actions: up to twice the
    bounds, so that clipping matters); raise on the first difference. Returns the number of episodes that ended."""
    stacks = [gymnasium_make_envs(module, args), module.make_envs(args), one_pass_make_envs(module, args)]
    first, *others = [envs.reset(seed=seed)[0] for envs in stacks]
    for obs in others:
        np.testing.assert_array_equal(first, obs, err_msg="first observations differ", strict=True)
    space, episodes = stacks[0].action_space, 0
    space.seed(seed)
    for step in range(steps):
        actions = space.sample()
        actions = (2 * actions).astype(space.dtype) if isinstance(space, gym.spaces.Box) else actions
        (*reference, reference_infos), *others = [envs.step(actions) for envs in stacks]
        for *outputs, infos in others:
            for name, a, b in zip(("observations", "rewards", "terminations", "truncations"), reference, outputs):
                np.testing.assert_array_equal(a, b, err_msg=f"{name} differ at step {step}", strict=True)
            assert ("episode" in reference_infos) == ("episode" in infos), f"episode statistics differ at step {step}"
            for key in ("r", "l") if "episode" in infos else ():
                np.testing.assert_array_equal(reference_infos["episode"][key], infos["episode"][key], strict=True)
        episodes += int(reference_infos["_episode"].sum()) if "episode" in reference_infos else 0
    reference, *others = (module.get_normalization(envs) for envs in stacks)
    for other in others:
        assert reference.keys() == other.keys()
        for key in reference:
            for field in ("mean", "var"):
                torch.testing.assert_close(reference[key][field], other[key][field], rtol=0, atol=0)
            assert reference[key]["count"] == other[key]["count"]
    for envs in stacks:
        envs.close()
    return episodes


def microseconds_per_step(envs, repeats: int = 5, steps: int = 2000) -> float:
    envs.reset(seed=0)
    envs.action_space.seed(0)
    actions, times = envs.action_space.sample(), []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            envs.step(actions)
        times.append((time.perf_counter() - start) / steps * 1e6)
    envs.close()
    return statistics.median(times)


def training_seconds(args, make_envs) -> tuple[float, list]:
    """Wall time and episode returns of ppo_continuous.train() with `make_envs` building its envs."""
    original, here = ppo_continuous.make_envs, os.getcwd()
    ppo_continuous.make_envs = lambda *a, **k: make_envs(ppo_continuous, *a, **k)
    try:
        with tempfile.TemporaryDirectory() as workdir:  # the run's logs go there
            os.chdir(workdir)
            start = time.perf_counter()
            summary = ppo_continuous.train(args)
    finally:
        ppo_continuous.make_envs = original
        os.chdir(here)
    return time.perf_counter() - start, summary["episodic_returns"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-id", default="HalfCheetah-v4")
    parser.add_argument("--iterations", type=int, default=6, help="training iterations of each timed run")
    parser.add_argument("--num-envs", type=int, default=1, help="envs per vector env (--num-envs of the script)")
    options = parser.parse_args()
    torch.set_num_threads(1)
    module = ppo_continuous
    args = module.validate_args(
        module.Args(env_id=options.env_id, num_envs=options.num_envs, cuda=False, save_model=False)
    )
    print(f"1. the same numbers over 5,000 random-action steps ({same_numbers(module, args, 5000)} episodes): yes")
    script_make_envs = module.make_envs  # (training_seconds swaps module.make_envs for the stack it times)
    stacks = {
        "gymnasium's wrappers": gymnasium_make_envs,
        "the script's": lambda module, *a, **k: script_make_envs(*a, **k),
        "one pass": one_pass_make_envs,
    }
    timed = ", ".join(f"{name} {microseconds_per_step(make(module, args)):.1f}" for name, make in stacks.items())
    print(f"2. us per vector step: {timed}")
    args = replace(args, total_timesteps=options.iterations * args.batch_size)
    seconds, returns = {}, {}
    for _ in range(3):
        for name, make_envs in stacks.items():
            wall, returns[name] = training_seconds(module.validate_args(args), make_envs)
            seconds[name] = min(wall, seconds.get(name, wall))
    timed = ", ".join(f"{name} {wall:.2f} s" for name, wall in seconds.items())
    print(f"3. training, {options.iterations} iterations of {args.batch_size} steps, fastest of 3 runs: {timed}")
    print(f"   the same returns: {len(set(map(tuple, returns.values()))) == 1}")


if __name__ == "__main__":
    main()
