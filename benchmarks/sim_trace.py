"""Does another MuJoCo version simulate an env alike? Record a fixed-action trace, then compare two.

    python benchmarks/sim_trace.py record trace_a.npz                     # in one environment
    other-venv/bin/python benchmarks/sim_trace.py record trace_b.npz      # e.g. with mujoco==2.3.7
    python benchmarks/sim_trace.py compare trace_a.npz trace_b.npz

A trace is one env stepped with the same seeded random actions (the env reset with a fixed seed at
each episode end): every observation, reward and termination, and the library versions. `compare`
prints where the observations first differ and by how much, then the episodes' lengths and returns side by
side: a trajectory is chaotic, so a difference in the last bits grows within an episode whatever its cause;
what would show a different simulator is episodes that end or score differently.
"""

import argparse

import gymnasium as gym
import mujoco
import numpy as np


def record(path: str, env_id: str, steps: int):
    env = gym.make(env_id)
    env.reset(seed=1)
    rng = np.random.default_rng(0)
    low, high = env.action_space.low, env.action_space.high
    observations, rewards, ends = [], [], []
    for step in range(steps):
        obs, reward, terminated, truncated, _ = env.step(rng.uniform(low, high))
        observations.append(obs)
        rewards.append(reward)
        ends.append(terminated or truncated)
        if terminated or truncated:
            env.reset(seed=step)
    versions = f"{env_id}, mujoco {mujoco.__version__}, gymnasium {gym.__version__}"
    np.savez(path, obs=np.array(observations), rewards=np.array(rewards), ends=np.array(ends), versions=versions)
    print(f"{path}: {steps} steps of {versions}, {int(np.sum(ends))} episode ends")


def episode_returns(trace) -> tuple[np.ndarray, np.ndarray]:
    ends = np.flatnonzero(trace["ends"])
    starts = np.concatenate([[0], ends[:-1] + 1])
    return ends - starts + 1, np.array([trace["rewards"][s : e + 1].sum() for s, e in zip(starts, ends)])


def compare(path_a: str, path_b: str):
    a, b = np.load(path_a), np.load(path_b)
    print(f"A: {a['versions']}\nB: {b['versions']}")
    obs_diff = np.abs(a["obs"] - b["obs"]).max(axis=1)
    if not np.any(obs_diff > 0):
        print("the traces are identical")
        return
    first = int(np.argmax(obs_diff > 0))
    print(f"observations first differ at step {first}, by {obs_diff[first]:.3g}")
    lengths_a, returns_a = episode_returns(a)
    lengths_b, returns_b = episode_returns(b)
    pairs = min(len(lengths_a), len(lengths_b))
    same = int(np.sum(lengths_a[:pairs] == lengths_b[:pairs]))
    print(f"episodes: {len(lengths_a)} and {len(lengths_b)}; {same} of the first {pairs} have the same length")
    print(f"episode return, mean: {returns_a.mean():.2f} and {returns_b.mean():.2f}; largest difference of an "
          f"episode pair {np.abs(returns_a[:pairs] - returns_b[:pairs]).max():.3g}")  # fmt: skip
    print(f"reward per step: largest difference {np.abs(a['rewards'] - b['rewards']).max():.3g}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    record_parser = commands.add_parser("record")
    record_parser.add_argument("path")
    record_parser.add_argument("--env-id", default="Humanoid-v4")
    record_parser.add_argument("--steps", type=int, default=1000)
    compare_parser = commands.add_parser("compare")
    compare_parser.add_argument("paths", nargs=2)
    cli = parser.parse_args()
    if cli.command == "record":
        record(cli.path, cli.env_id, cli.steps)
    else:
        compare(*cli.paths)
