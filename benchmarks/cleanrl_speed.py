"""CleanRL's own scripts against ours, side by side: whole-process wall time and steady steps/s.

    python benchmarks/cleanrl_speed.py --cleanrl-dir DIR --cleanrl-python ENV/bin/python
    python benchmarks/cleanrl_speed.py --cleanrl-dir DIR --rounds 3 --only HalfCheetah-v4
    python benchmarks/cleanrl_speed.py --cleanrl-dir DIR --cleanrl-python ENV/bin/python --env-stacks

What a user comparing the two does: train HalfCheetah-v4 (300k steps) and CartPole-v1 (500k steps) with
every script's defaults, start to exit, one run at a time, each in a fresh temporary folder. Each round
runs CleanRL's script (with --cleanrl-python, e.g. a virtual environment with CleanRL's pinned
gymnasium 0.29.1 and mujoco 2.3.3), ours, and ours with --compile (compiling included). Prints every
run (with CleanRL's wall time of the same round over it), then the median of each over the rounds:
wall time, CleanRL's median wall time over ours (the speed-up), and the steady rate (steps between
the 3rd and the last iteration's `charts/SPS` event over the time between them, start-up, warm-up
and compiling left out).

With --env-stacks, no training: each script's vector env with its wrappers (CleanRL's `make_env`, our
`make_envs`), built by the script itself in its own Python, steps one fixed action; microseconds per
vector step, median of 5 x 2,000 steps in each round, then the median over the rounds.

CleanRL's scripts are not part of this repository: DIR holds `ppo.py` and `ppo_continuous_action.py`
from github.com/vwxyzjn/cleanrl, of the version that matches the gymnasium they run with (see
docs/speed.md).
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO = Path(__file__).resolve().parent.parent
CONFIGS = [  # env id, CleanRL's script, ours, total steps
    ("HalfCheetah-v4", "ppo_continuous_action.py", "ppo_continuous.py", 300_000),
    ("CartPole-v1", "ppo.py", "ppo_discrete.py", 500_000),
]
ENV_STACK = """
import statistics, sys, time
import gymnasium as gym
sys.path.insert(0, sys.argv[1])
{make}
envs.reset(seed=0)
actions, times = envs.action_space.sample(), []
for _ in range(5):
    start = time.perf_counter()
    for _ in range(2000):
        envs.step(actions)
    times.append((time.perf_counter() - start) / 2000 * 1e6)
print(statistics.median(times))
"""
MAKE_CLEANRL = """from {module} import make_env
import inspect
gamma = [0.99] if "gamma" in inspect.signature(make_env).parameters else []  # ppo_continuous_action.py's reward scale
envs = gym.vector.SyncVectorEnv([make_env({env_id!r}, i, False, "", *gamma) for i in range({n})])"""
MAKE_OURS = """from {module} import Args, make_envs, validate_args
envs = make_envs(validate_args(Args(env_id={env_id!r}, cuda=False)))"""
NUM_ENVS = {"HalfCheetah-v4": 1, "CartPole-v1": 4}  # each script's default
FIRST_EVENT = 2  # the rate starts at the 3rd iteration's event, stamped at its end: iterations 1-3 are left out


def steady_steps_per_second(run_dir: Path) -> float:
    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    events = accumulator.Scalars("charts/SPS")[FIRST_EVENT:]
    return (events[-1].step - events[0].step) / (events[-1].wall_time - events[0].wall_time)


def train(python: str, script: Path, env_id: str, total_timesteps: int, extra: list[str]) -> tuple[float, float]:
    """Wall time of the whole process, start to exit, and the steady steps/s of its run."""
    with tempfile.TemporaryDirectory() as workdir:
        command = [python, str(script), "--env-id", env_id, "--total-timesteps", str(total_timesteps), *extra]
        start = time.perf_counter()
        result = subprocess.run(command, cwd=workdir, env={**os.environ, "PYTHONWARNINGS": "ignore"},
                                capture_output=True, text=True)  # fmt: skip
        wall = time.perf_counter() - start
        if result.returncode != 0:
            raise SystemExit(f"failed: {' '.join(command)}\n{(result.stdout + result.stderr)[-3000:]}")
        return wall, steady_steps_per_second(next((Path(workdir) / "runs").iterdir()))


def env_stack_microseconds(python: str, folder: Path, make: str) -> float:
    """Microseconds per vector step of the env stack that `make` (code run in `folder`) builds, in `python`."""
    command = [python, "-c", ENV_STACK.format(make=make), str(folder)]
    result = subprocess.run(command, env={**os.environ, "PYTHONWARNINGS": "ignore"}, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"failed: the env stack of {make!r}\n{(result.stdout + result.stderr)[-3000:]}")
    return float(result.stdout.split()[-1])


def env_stacks(configs, options):
    """--env-stacks: each script's vector env with its wrappers, CleanRL's in its own Python, ours in this one."""
    figures = {}
    for round_index in range(1, options.rounds + 1):
        for env_id, cleanrl_script, our_script, _ in configs:
            names = {"env_id": env_id, "n": NUM_ENVS[env_id]}
            cleanrl = MAKE_CLEANRL.format(module=cleanrl_script[: -len(".py")], **names)
            ours = MAKE_OURS.format(module=our_script[: -len(".py")], **names)
            stacks = {
                "CleanRL": (options.cleanrl_python, options.cleanrl_dir, cleanrl),
                "ours": (sys.executable, REPO, ours),
            }
            for column, (python, folder, make) in stacks.items():
                microseconds = env_stack_microseconds(python, folder, make)
                figures.setdefault(env_id, {}).setdefault(column, []).append(microseconds)
                print(f"round {round_index} {env_id} {column}: {microseconds:.1f} us per vector step", flush=True)
    print(f"\nmedian of {options.rounds} round(s): us per vector step of the env with its wrappers, fixed action")
    print("| env (envs) | CleanRL's stack | ours |")
    print("|---|---|---|")
    for env_id, columns in figures.items():
        cleanrl, ours = (statistics.median(columns[column]) for column in ("CleanRL", "ours"))
        print(f"| {env_id} ({NUM_ENVS[env_id]}) | {cleanrl:.0f} us | {ours:.0f} us |")


def summary_row(env_id: str, runs: dict) -> str:
    """A table row of medians: each column's wall time (and CleanRL's over it) and steady steps/s."""
    cleanrl = statistics.median(wall for wall, _ in runs["CleanRL"])
    cells = []
    for column, figures in runs.items():
        wall, rate = statistics.median(w for w, _ in figures), statistics.median(r for _, r in figures)
        speedup = "" if column == "CleanRL" else f" ({cleanrl / wall:.2f}x)"
        cells.append(f"{wall:.0f} s{speedup}, {rate:,.0f} steps/s")
    return f"| {env_id} | " + " | ".join(cells) + " |"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--cleanrl-dir", type=Path, required=True, help="folder with CleanRL's ppo.py and ppo_continuous_action.py"
    )
    parser.add_argument("--cleanrl-python", default=sys.executable, help="the Python that runs CleanRL's scripts")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of every run, for the medians")
    parser.add_argument("--only", nargs="*", help="env ids to measure (default: both)")
    parser.add_argument("--env-stacks", action="store_true", help="time the env stacks only, not training")
    options = parser.parse_args()
    configs = [config for config in CONFIGS if not options.only or config[0] in options.only]
    for _, cleanrl_script, _, _ in configs:
        if not (options.cleanrl_dir / cleanrl_script).is_file():
            raise SystemExit(
                f"error: {options.cleanrl_dir / cleanrl_script} not found; put CleanRL's {cleanrl_script} there"
            )
    if options.env_stacks:
        return env_stacks(configs, options)

    figures = {}
    for round_index in range(1, options.rounds + 1):
        for env_id, cleanrl_script, our_script, total in configs:
            runs = {
                "CleanRL": (options.cleanrl_python, options.cleanrl_dir / cleanrl_script, []),
                "ours": (sys.executable, REPO / our_script, []),
                "ours --compile": (sys.executable, REPO / our_script, ["--compile"]),
            }
            for column, (python, script, extra) in runs.items():
                wall, rate = train(python, script, env_id, total, extra)
                figures.setdefault(env_id, {}).setdefault(column, []).append((wall, rate))
                cleanrl_wall = figures[env_id]["CleanRL"][-1][0]  # this round's CleanRL run (the round's first)
                speedup = "" if column == "CleanRL" else f" ({cleanrl_wall / wall:.2f}x this round)"
                print(f"round {round_index} {env_id} {column}: {wall:.1f} s{speedup}, {rate:,.0f} steps/s", flush=True)

    print(f"\nmedian of {options.rounds} round(s): wall time start to exit (CleanRL's over ours), steady steps/s")
    print("| env | CleanRL | ours | ours --compile |")
    print("|---|---|---|---|")
    for env_id, runs in figures.items():
        print(summary_row(env_id, runs))


if __name__ == "__main__":
    main()
