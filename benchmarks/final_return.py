"""Print the final figures of finished runs, read from their TensorBoard event files.

    python benchmarks/final_return.py runs/CartPole-v1__ppo_discrete__1__1700000000 [more run dirs]
    python benchmarks/final_return.py RUN_DIR --at 100000 200000   # also: the return up to each step

Final return is computed as CleanRL reports it: the mean of the last 100 training episodes'
returns (the raw env reward, before normalization). Steps/s is the last `charts/SPS` value
(global steps over wall time since training started). `--at` adds, for each step given, the mean
of the last 20 and of the last 100 episodes that ended at or before it (the console's "return(last 20)"
at that point, and the final figure's rule applied there).
"""

import argparse
import glob
import os

import numpy as np
from results import training_seconds  # benchmarks/results.py: wall time without pauses between stop and resume
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def summarize(run_dir: str, at: tuple[int, ...] = ()) -> dict:
    if not glob.glob(os.path.join(run_dir, "events.out.tfevents.*")):
        raise SystemExit(f"error: {run_dir} holds no TensorBoard events; pass a run directory under runs/")
    accumulator = EventAccumulator(run_dir, size_guidance={"scalars": 0})
    accumulator.Reload()
    episodes = accumulator.Scalars("charts/episodic_return")
    returns = [event.value for event in episodes]
    sps = accumulator.Scalars("charts/SPS")
    return {
        "run": run_dir.rstrip("/").split("/")[-1],
        "global_step": sps[-1].step,
        "episodes": len(returns),
        "return_last100": float(np.mean(returns[-100:])),
        "return_last10": float(np.mean(returns[-10:])),
        "steps_per_s": sps[-1].value,
        "wall_s": training_seconds(run_dir),
        "returns_at": {step: [e.value for e in episodes if e.step <= step] for step in at},
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    parser.add_argument("--at", nargs="+", type=int, default=[], metavar="STEP")
    cli = parser.parse_args()
    for run_dir in cli.run_dirs:
        s = summarize(run_dir, tuple(cli.at))
        print(
            f"{s['run']}: {s['global_step']:,} steps, {s['episodes']} episodes, "
            f"return (last 100 episodes) {s['return_last100']:.1f}, (last 10) {s['return_last10']:.1f}, "
            f"{s['steps_per_s']:,.0f} steps/s, {s['wall_s']:.0f} s"
        )
        for step, returns in s["returns_at"].items():
            print(f"  at step {step:,}: " + (
                f"return (last 20 episodes) {np.mean(returns[-20:]):.1f}, (last 100) {np.mean(returns[-100:]):.1f}"
                if returns else "no episode yet"
            ))  # fmt: skip
