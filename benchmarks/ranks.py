"""Training steps/s with 1 rank vs 2 ranks under torchrun (each rank with its own envs).

    python benchmarks/ranks.py                 # CartPole-v1 and HalfCheetah-v4, default settings
    python benchmarks/ranks.py --iterations 5  # shorter

Both runs do the same number of iterations; with 2 ranks each iteration collects twice the
data (--num-envs is per rank), so perfect scaling doubles steps/s. Steps/s is the script's own
`charts/SPS` at the end of the run (all ranks' steps over wall time, start-up excluded).
"""

import argparse
import importlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO = Path(__file__).resolve().parent.parent
CONFIGS = [("ppo_discrete.py", "CartPole-v1"), ("ppo_continuous.py", "HalfCheetah-v4")]


def steps_per_iteration(script, env_id, extra):
    """One rank's --num-envs x --num-steps, the extra flags included."""
    import tyro

    sys.path.insert(0, str(REPO))
    args = tyro.cli(importlib.import_module(script[: -len(".py")]).Args, args=["--env-id", env_id, *extra])
    return args.num_envs * args.num_steps


def steps_per_second(script, env_id, ranks, total_timesteps, extra):
    with tempfile.TemporaryDirectory() as workdir:
        launcher = [sys.executable] if ranks == 1 else [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks)]  # fmt: skip
        command = [*launcher, str(REPO / script), "--env-id", env_id, "--total-timesteps", str(total_timesteps), *extra]
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        result = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"failed: {' '.join(command)}\n{(result.stdout + result.stderr)[-3000:]}")
        run_dir = next((Path(workdir) / "runs").iterdir())
        accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
        accumulator.Reload()
        return accumulator.Scalars("charts/SPS")[-1].value


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=20, help="iterations per run")
    parser.add_argument("--ranks", type=int, default=2, help="ranks to compare with a single process")
    parser.add_argument("extra", nargs="*", help="extra flags for the scripts, after --")
    options = parser.parse_args()
    print(f"| env | 1 process steps/s | {options.ranks} ranks steps/s | speed-up |")
    print("|---|---|---|---|")
    for script, env_id in CONFIGS:
        per_iteration = steps_per_iteration(script, env_id, options.extra)
        single = steps_per_second(script, env_id, 1, options.iterations * per_iteration, options.extra)
        multi = steps_per_second(script, env_id, options.ranks, options.iterations * per_iteration * options.ranks,
                                 options.extra)  # fmt: skip
        print(f"| {env_id} | {single:,.0f} | {multi:,.0f} | {multi / single:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
