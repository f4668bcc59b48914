"""Print the final figures of finished runs, read from their TensorBoard event files.

    python benchmarks/final_return.py runs/CartPole-v1__ppo_discrete__1__1700000000 [more run dirs]

Final return is computed as CleanRL reports it: the mean of the last 100 training episodes'
returns (the raw env reward, before normalization). Steps/s is the last `charts/SPS` value
(global steps over wall time since training started).
"""

import sys

import numpy as np
from results import training_seconds  # benchmarks/results.py: wall time without pauses between stop and resume
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def summarize(run_dir: str) -> dict:
    accumulator = EventAccumulator(run_dir, size_guidance={"scalars": 0})
    accumulator.Reload()
    returns = [event.value for event in accumulator.Scalars("charts/episodic_return")]
    sps = accumulator.Scalars("charts/SPS")
    return {
        "run": run_dir.rstrip("/").split("/")[-1],
        "global_step": sps[-1].step,
        "episodes": len(returns),
        "return_last100": float(np.mean(returns[-100:])),
        "return_last10": float(np.mean(returns[-10:])),
        "steps_per_s": sps[-1].value,
        "wall_s": training_seconds(run_dir),
    }


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit("usage: python benchmarks/final_return.py RUN_DIR [RUN_DIR ...]")
    for run_dir in sys.argv[1:]:
        s = summarize(run_dir)
        print(
            f"{s['run']}: {s['global_step']:,} steps, {s['episodes']} episodes, "
            f"return (last 100 episodes) {s['return_last100']:.1f}, (last 10) {s['return_last10']:.1f}, "
            f"{s['steps_per_s']:,.0f} steps/s, {s['wall_s']:.0f} s"
        )
