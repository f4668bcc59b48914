"""Would one vector wrapper of our own pay for its lines? gymnasium's wrappers against one pass.

    python benchmarks/one_pass_wrapper.py              # HalfCheetah-v4
    python benchmarks/one_pass_wrapper.py --env-id Hopper-v4 --iterations 4

`ppo_continuous.make_envs` stacks gymnasium's vector wrappers: episode statistics, action clipping,
observation normalization, observation clipping, reward normalization, reward clipping. `OnePass`
below does the same six things in one wrapper, with gymnasium's arithmetic, so a run gives the
same numbers. The scripts keep gymnasium's stack; this file measures what they leave on the table:

1. The same numbers: both stacks step the same random actions (episode ends included) and must give
   identical observations, rewards, flags, episode statistics and running statistics.
2. Microseconds per vector step under random actions, each stack (median of 5).
3. Whole training: `ppo_continuous.train` at its defaults for a few iterations with each stack,
   alternating, three rounds; the fastest of each, and whether both runs gave the same returns.
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
from gymnasium.wrappers.utils import RunningMeanStd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import ppo_continuous  # noqa: E402


class OnePass(gym.vector.VectorWrapper):
    """gymnasium's vector RecordEpisodeStatistics, the action clip, NormalizeObservation and NormalizeReward
    (NEXT_STEP autoreset), each normalization followed by a clip, in one wrapper with gymnasium's arithmetic."""

    def __init__(self, envs, args: ppo_continuous.Args):
        super().__init__(envs)
        self.args, self.update_running_mean, n = args, True, envs.num_envs
        if args.norm_obs:  # gymnasium's statistics start as float32 (its new observation space's dtype)
            self.single_observation_space = gym.spaces.Box(-np.inf, np.inf, envs.single_observation_space.shape)
            self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, n)
            self.obs_rms = RunningMeanStd(shape=self.single_observation_space.shape, dtype=np.float32)
        if args.norm_reward:
            self.return_rms = RunningMeanStd(shape=())
        self.discounted, self.episode_returns = np.zeros(n, np.float32), np.zeros(n)
        self.episode_lengths, self.prev_dones = np.zeros(n, int), np.zeros(n, bool)

    def reset(self, **kwargs):
        obs, infos = self.env.reset(**kwargs)
        self.discounted[:], self.episode_returns[:], self.episode_lengths[:], self.prev_dones[:] = 0, 0, 0, False
        return self.observations(obs), infos

    def observations(self, obs):
        if not self.args.norm_obs:
            return obs
        if self.update_running_mean:
            self.obs_rms.update(obs)
        obs = ((obs - self.obs_rms.mean) / np.sqrt(self.obs_rms.var + 1e-8)).astype(np.float32)
        return np.clip(obs, -self.args.clip_obs, self.args.clip_obs)

    def step(self, actions):
        actions = np.clip(actions, self.single_action_space.low, self.single_action_space.high)
        obs, rewards, terminations, truncations, infos = self.env.step(actions)
        active, dones = ~self.prev_dones, terminations | truncations  # NEXT_STEP: a done env resets at its next step
        self.episode_returns[self.prev_dones], self.episode_lengths[self.prev_dones] = 0, 0
        self.episode_returns[active] += rewards[active]
        self.episode_lengths[active] += 1
        if dones.any():
            infos["episode"] = {
                "r": np.where(dones, self.episode_returns, 0.0),
                "l": np.where(dones, self.episode_lengths, 0),
            }
            infos["_episode"] = dones
        self.prev_dones = dones
        if self.args.norm_reward:
            self.discounted[active] = (
                self.discounted[active] * self.args.gamma * (1 - terminations[active]) + rewards[active]
            )
            if self.update_running_mean and active.any():
                self.return_rms.update(self.discounted[active])
            rewards = rewards / np.sqrt(self.return_rms.var + 1e-8)
            rewards = np.clip(rewards, -self.args.clip_reward, self.args.clip_reward)
        return self.observations(obs), rewards, terminations, truncations, infos


def one_pass_make_envs(args: ppo_continuous.Args, video_folder=None, evaluation=False):
    """make_envs with OnePass in place of gymnasium's wrappers (training envs only: no video, no evaluation)."""
    assert video_folder is None and not evaluation and not args.rescale_actions and not args.async_envs
    thunks = [ppo_continuous.make_env(args, i, {}) for i in range(args.num_envs)]
    return OnePass(gym.vector.SyncVectorEnv(thunks, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP), args)


def same_numbers(args: ppo_continuous.Args, steps: int, seed: int = 0) -> int:
    """Step both stacks with the same random actions (twice the action bounds: clipping matters); raise on the first
    difference. Returns the number of episodes that ended."""
    stacks = ppo_continuous.make_envs(args), one_pass_make_envs(args)
    first = [envs.reset(seed=seed)[0] for envs in stacks]
    np.testing.assert_array_equal(*first, strict=True)
    rng, episodes = np.random.default_rng(seed), 0
    shape = (args.num_envs, *stacks[0].single_action_space.shape)
    for step in range(steps):
        actions = (2 * rng.uniform(-1, 1, shape) * stacks[0].single_action_space.high).astype(np.float32)
        (*theirs, their_infos), (*ours, our_infos) = (envs.step(actions) for envs in stacks)
        for name, a, b in zip(("observations", "rewards", "terminations", "truncations"), theirs, ours):
            np.testing.assert_array_equal(a, b, err_msg=f"{name} differ at step {step}", strict=True)
        assert ("episode" in their_infos) == ("episode" in our_infos), f"episode statistics differ at step {step}"
        if "episode" in our_infos:
            episodes += int(our_infos["_episode"].sum())
            for key in ("r", "l"):
                np.testing.assert_array_equal(their_infos["episode"][key], our_infos["episode"][key], strict=True)
            np.testing.assert_array_equal(their_infos["_episode"], our_infos["_episode"], strict=True)
    theirs, ours = (ppo_continuous.get_normalization(envs) for envs in stacks)
    assert theirs.keys() == ours.keys()
    for key in theirs:
        for field in ("mean", "var"):
            torch.testing.assert_close(theirs[key][field], ours[key][field], rtol=0, atol=0)
        assert theirs[key]["count"] == ours[key]["count"]
    for envs in stacks:
        envs.close()
    return episodes


def microseconds_per_step(envs, repeats: int = 5, steps: int = 2000) -> float:
    envs.reset(seed=0)
    actions, times = envs.action_space.sample(), []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            envs.step(actions)
        times.append((time.perf_counter() - start) / steps * 1e6)
    envs.close()
    return statistics.median(times)


def training_seconds(args: ppo_continuous.Args, make_envs) -> tuple[float, list]:
    """Wall time and episode returns of train() with `make_envs` building its envs."""
    original, ppo_continuous.make_envs, here = ppo_continuous.make_envs, make_envs, os.getcwd()
    try:
        with tempfile.TemporaryDirectory() as workdir:  # the run's logs and checkpoint go there
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
    options = parser.parse_args()
    torch.set_num_threads(1)
    args = ppo_continuous.validate_args(ppo_continuous.Args(env_id=options.env_id, cuda=False, save_model=False))
    print(f"1. the same numbers over 5,000 random-action steps ({same_numbers(args, 5000)} episodes): yes")
    gymnasium_us = microseconds_per_step(ppo_continuous.make_envs(args))
    one_pass_us = microseconds_per_step(one_pass_make_envs(args))
    print(f"2. us per vector step: gymnasium's wrappers {gymnasium_us:.1f}, one pass {one_pass_us:.1f}")
    args = replace(args, total_timesteps=options.iterations * args.batch_size)
    stacks = {"gymnasium's wrappers": ppo_continuous.make_envs, "one pass": one_pass_make_envs}
    seconds, returns = {}, {}
    for _ in range(3):
        for name, make_envs in stacks.items():
            wall, returns[name] = training_seconds(ppo_continuous.validate_args(args), make_envs)
            seconds[name] = min(wall, seconds.get(name, wall))
    (theirs, ours), same = seconds.values(), len(set(map(tuple, returns.values()))) == 1
    timed = f"{options.iterations} iterations of {args.batch_size} steps, fastest of 3 runs"
    less = 1 - ours / theirs
    print(f"3. training, {timed}: gymnasium's wrappers {theirs:.2f} s, one pass {ours:.2f} s ({less:.1%} less)")
    print(f"   the same returns: {same}")


if __name__ == "__main__":
    main()
