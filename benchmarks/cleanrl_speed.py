"""Training steps/s of CleanRL's own scripts and of ours, with the same installed libraries, side by side.

    python benchmarks/cleanrl_speed.py --cleanrl-dir DIR               # DIR holds CleanRL's two scripts
    python benchmarks/cleanrl_speed.py --cleanrl-dir DIR --rounds 1    # quicker

The issue's CPU targets are twice CleanRL's steps/s measured with CleanRL's pinned gymnasium 0.29.
This measures on whatever gymnasium is installed here, so the cost of the env stack falls on both
sides. Each round trains, one at a time and each in a fresh temporary folder: CleanRL's script,
ours, and ours with --compile, on CartPole-v1 and on HalfCheetah-v4 with default settings and
every script's own defaults otherwise (threads included). Steps/s is the steady rate: the steps
between the 3rd and the last iteration's `charts/SPS` event over the wall time between them, so
start-up, warm-up and compiling are left out alike for every script. Prints every run, then the
median of each column over the rounds and its ratio to CleanRL's.

CleanRL's scripts are not part of this repository. Take `cleanrl/ppo.py` and
`cleanrl/ppo_continuous_action.py` from github.com/vwxyzjn/cleanrl. On gymnasium 1.x the continuous
one needs one change to start: `TransformObservation(env, func, env.observation_space)` (the space
argument is required there); `ppo.py` runs as it is (its `final_info` episode logging stays silent).
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO = Path(__file__).resolve().parent.parent
CONFIGS = [  # env id, CleanRL's script, ours, steps per iteration at the defaults, iterations to run
    ("CartPole-v1", "ppo.py", "ppo_discrete.py", 512, 100),
    ("HalfCheetah-v4", "ppo_continuous_action.py", "ppo_continuous.py", 2048, 30),
]
FIRST_EVENT = 2  # the rate starts at the 3rd iteration's event, stamped at its end: iterations 1-3 are left out


def steady_steps_per_second(run_dir: Path) -> float:
    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    events = accumulator.Scalars("charts/SPS")[FIRST_EVENT:]
    return (events[-1].step - events[0].step) / (events[-1].wall_time - events[0].wall_time)


def train(script: Path, env_id: str, total_timesteps: int, extra: list[str]) -> float:
    with tempfile.TemporaryDirectory() as workdir:
        command = [sys.executable, str(script), "--env-id", env_id, "--total-timesteps", str(total_timesteps), *extra]
        result = subprocess.run(command, cwd=workdir, env={**os.environ, "PYTHONWARNINGS": "ignore"},
                                capture_output=True, text=True)  # fmt: skip
        if result.returncode != 0:
            raise SystemExit(f"failed: {' '.join(command)}\n{(result.stdout + result.stderr)[-3000:]}")
        return steady_steps_per_second(next((Path(workdir) / "runs").iterdir()))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--cleanrl-dir", type=Path, required=True, help="folder with CleanRL's ppo.py and ppo_continuous_action.py"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every run, for the medians")
    options = parser.parse_args()
    for _, cleanrl_script, _, _, _ in CONFIGS:
        if not (options.cleanrl_dir / cleanrl_script).is_file():
            raise SystemExit(
                f"error: {options.cleanrl_dir / cleanrl_script} not found; put CleanRL's {cleanrl_script} there"
            )

    columns = ("CleanRL", "ours", "ours --compile")
    figures = {(env_id, column): [] for env_id, *_ in CONFIGS for column in columns}
    for round_index in range(1, options.rounds + 1):
        for env_id, cleanrl_script, our_script, per_iteration, iterations in CONFIGS:
            total = per_iteration * iterations
            runs = {
                "CleanRL": (options.cleanrl_dir / cleanrl_script, []),
                "ours": (REPO / our_script, []),
                "ours --compile": (REPO / our_script, ["--compile"]),
            }
            for column, (script, extra) in runs.items():
                figures[env_id, column].append(train(script, env_id, total, extra))
            print(
                f"round {round_index} {env_id}: " + ", ".join(f"{c} {figures[env_id, c][-1]:,.0f}" for c in columns),
                flush=True,
            )

    print(f"\nsteps/s, median of {options.rounds} round(s), steady rate (after the first three iterations)")
    print("| env | CleanRL | ours | ours --compile |")
    print("|---|---|---|---|")
    for env_id, *_ in CONFIGS:
        medians = {column: statistics.median(figures[env_id, column]) for column in columns}
        cleanrl = medians["CleanRL"]
        cells = [f"{cleanrl:,.0f}"] + [f"{medians[c]:,.0f} ({medians[c] / cleanrl:.2f}x)" for c in columns[1:]]
        print(f"| {env_id} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
