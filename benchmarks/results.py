"""The published results: train a list of runs, then write a results table, a JSON file and learning curves.

    python benchmarks/results.py                      # train every missing run, then write the results
    python benchmarks/results.py --only CartPole-v1   # only these envs
    python benchmarks/results.py --configs default    # only these configs (default, many-envs, large-batch...)
    python benchmarks/results.py --jobs 2             # two trainings at a time (one per core)
    python benchmarks/results.py --collect            # train nothing: write the results from the runs there are

Runs go to `runs/` like any other training, named `{env}__results-{config}__{seed}__{time}`, and
each keeps a checkpoint (`--save-model`). A run whose checkpoint says it finished the same
training (same flags, see NOT_TRAINING) is not trained again; one stopped with a checkpoint
(Ctrl-C, or the checkpoint every 25 iterations after a crash) resumes from it. So the command can
be stopped and started again, and a second invocation started beside a first one takes only runs
nobody is training (each is claimed by a file in `runs/.claims/` holding its trainer's pid).

Outputs, in `benchmarks/results/`: `results.json` (every run's figures), `results.md` (the table),
and one `{env}.png` per env (mean and spread across seeds of the training return).

Final return is computed as CleanRL does: the mean return of the last 100 training episodes (raw env
reward, before any normalization), then mean +- std over seeds. The eval column is the deterministic
return of 10 episodes (mean action; the most likely action for discrete actions) with frozen
normalization statistics, after the last iteration.
"""

import argparse
import glob
import importlib
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "benchmarks" / "results"

# the large-batch Humanoid preset: Sample Factory's setting, reported there at ~5,400 after 10M steps
HUMANOID_LARGE_BATCH = (
    "--num-envs 64 --num-steps 64 --update-epochs 2 --num-minibatches 4 --learning-rate 2.95e-3 --no-clip-vloss "
    "--max-grad-norm 3.5 --vf-coef 1.3"
).split()

# the large-network Humanoid preset: rl_games' shape (512-256-128 ELU networks, normalized value targets)
HUMANOID_LARGE_NET = (
    "--num-envs 64 --num-steps 64 --num-minibatches 2 --update-epochs 5 --learning-rate 3e-4 "
    "--hidden-sizes 512 256 128 --activation ELU --norm-value --vf-coef 2 --max-grad-norm 1.0"
).split()

# the default batch gathered from more envs at once, compiled: the fast setting on a CPU (speed.py measures it)
FAST_CARTPOLE, FAST_HALFCHEETAH = (
    "--num-envs 16 --num-steps 32 --compile".split(),
    "--num-envs 8 --num-steps 256 --compile".split(),
)

# (script, env, config name, seeds, total steps, extra flags)
RUNS = [
    ("ppo_discrete.py", "CartPole-v1", "default", [1, 2, 3], 500_000, []),
    ("ppo_continuous.py", "HalfCheetah-v4", "default", [1, 2, 3], 1_000_000, []),
    ("ppo_continuous.py", "Hopper-v4", "default", [1, 2, 3], 1_000_000, []),
    ("ppo_continuous.py", "Walker2d-v4", "default", [1, 2, 3], 1_000_000, []),
    ("ppo_continuous.py", "Humanoid-v4", "default", [1, 2, 3, 4, 5], 1_000_000, []),
    ("ppo_continuous.py", "Humanoid-v4", "large-batch", [1, 2, 3], 10_000_000, HUMANOID_LARGE_BATCH),
    ("ppo_continuous.py", "Humanoid-v4", "large-net", [1, 2, 3], 10_000_000, HUMANOID_LARGE_NET),
    ("ppo_discrete.py", "CartPole-v1", "many-envs", [1, 2, 3], 500_000, FAST_CARTPOLE),
    ("ppo_continuous.py", "HalfCheetah-v4", "many-envs", [1, 2, 3], 1_000_000, FAST_HALFCHEETAH),
]

# published figures to compare with (mean +- std of the last-100-episode return over seeds)
PUBLISHED = {
    ("CartPole-v1", "default"): "490.0 ± 6.1 (CleanRL, 3 seeds)",
    ("HalfCheetah-v4", "default"): "1442.6 ± 46.0 (CleanRL, 3 seeds)",
    ("Hopper-v4", "default"): "2382.9 ± 271.7 (CleanRL, 3 seeds)",
    ("Walker2d-v4", "default"): "2288.0 ± 571.8 (CleanRL, 3 seeds)",
    ("Humanoid-v4", "default"): "716.1 ± 49.1 (CleanRL, 3 seeds)",
    ("Humanoid-v4", "large-batch"): "~5,400 (Sample Factory, same setting)",
    ("Humanoid-v4", "large-net"): "~10,000 at ~16M steps (rl_games with envpool)",
    ("CartPole-v1", "many-envs"): "490.0 ± 6.1 (CleanRL's default config, for reference)",
    ("HalfCheetah-v4", "many-envs"): "1442.6 ± 46.0 (CleanRL's default config, for reference)",
}
PUBLISHED_MEAN = {
    ("CartPole-v1", "default"): 490.04, ("HalfCheetah-v4", "default"): 1442.64, ("Hopper-v4", "default"): 2382.86,
    ("Walker2d-v4", "default"): 2287.95, ("Humanoid-v4", "default"): 716.11, ("Humanoid-v4", "large-batch"): 5400.0,
}  # fmt: skip


# Args fields that do not change what is learned (--compile: the same losses to ~1e-4): a finished run counts
# whatever they were, and a resumed one saves this invocation's, not the row's
NOT_TRAINING = set(
    "exp_name cuda compile cudagraphs torch_threads async_envs track wandb_project_name wandb_entity capture_video "
    "save_model checkpoint_every resume init_from eval_every eval_episodes eval_stochastic eval_max_episode_steps "
    "eval_checkpoint".split()
)


def training_flags(env_id: str, seed: int, steps: int, flags: list[str]) -> list[str]:
    return ["--env-id", env_id, "--seed", str(seed), "--total-timesteps", str(steps), *flags]


def expected_args(script: str, env_id: str, seed: int, steps: int, flags: list[str]) -> dict:
    """What the script's Args hold for this run, as its checkpoint saves them, and each flag's default under
    "defaults" (a run saved before a flag existed ran with what is now its default)."""
    import tyro

    sys.path.insert(0, str(REPO))
    module = importlib.import_module(script[: -len(".py")])
    args = module.validate_args(tyro.cli(module.Args, args=training_flags(env_id, seed, steps, flags)))
    return {key: value for key, value in vars(args).items() if key not in NOT_TRAINING} | {
        "defaults": vars(module.Args())
    }


def same_training(saved: dict, expected: dict) -> bool:
    plain = lambda value: list(value) if isinstance(value, (list, tuple)) else value  # noqa: E731
    defaults = expected["defaults"]
    return all(
        plain(saved.get(key, defaults.get(key))) == plain(value) for key, value in expected.items() if key != "defaults"
    )


def run_state(script: str, env_id: str, config: str, seed: int, steps: int, flags: list[str]):
    """("finished", run dir, checkpoint) for the newest run of exactly this training that completed;
    else ("stopped", run dir, checkpoint) for the newest one stopped with a checkpoint; else None."""
    import torch

    expected = expected_args(script, env_id, seed, steps, flags)
    stopped = None
    pattern = f"{env_id.replace('/', '-').replace(':', '-')}__results-{config}__{seed}__*"
    for run_dir in sorted(glob.glob(str(REPO / "runs" / pattern)), reverse=True):
        path = os.path.join(run_dir, "checkpoint.pt")
        if not os.path.exists(path):
            continue
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # truncated, corrupt: not a run to count or resume
            print(f"skipping {run_dir}: its checkpoint.pt does not load ({type(error).__name__})", flush=True)
            continue
        if not same_training(checkpoint["args"], expected):
            continue
        if checkpoint["iteration"] == checkpoint["args"]["num_iterations"]:
            return "finished", run_dir, checkpoint
        stopped = stopped or ("stopped", run_dir, checkpoint)
    return stopped


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_claim(claim: Path, pid: int, replace: bool) -> None:
    """Give the claim file its pid at once, never empty for a moment (another invocation reading an
    empty claim would take it as stale): written aside, then linked (fails if it exists) or replaced."""
    aside = claim.with_name(f"{claim.name}.{os.getpid()}.tmp")
    aside.write_text(str(pid))
    try:
        if replace:
            os.replace(aside, claim)
        else:
            os.link(aside, claim)
    finally:
        aside.unlink(missing_ok=True)


def take_claim(claim: Path) -> bool:
    """Claim a run for this invocation: a file holding the pid of whoever trains it. A claim whose
    process is gone (an invocation or training killed) is stale and taken over."""
    for _ in range(2):
        try:
            write_claim(claim, os.getpid(), replace=False)
        except FileExistsError:
            try:
                owner = int(claim.read_text().strip() or 0)
            except (OSError, ValueError):
                owner = 0
            if owner and pid_alive(owner):
                return False
            claim.unlink(missing_ok=True)  # stale
            continue
        return True
    return False


def train_missing(only: set[str] | None, jobs: int, configs: set[str] | None = None):
    """Train every run that has not finished, `jobs` at a time; a stopped run with a checkpoint resumes."""
    claims = REPO / "runs" / ".claims"
    claims.mkdir(parents=True, exist_ok=True)
    # breadth first: every row gets its first seed before any row gets its second, so that a
    # stopped invocation leaves results for every row
    todo = [
        (script, env_id, config, seeds[rank], steps, flags)
        for rank in range(max(len(row[3]) for row in RUNS))
        for script, env_id, config, seeds, steps, flags in RUNS
        if rank < len(seeds) and (only is None or env_id in only) and (configs is None or config in configs)
    ]
    running = []  # (process, claim file, log file, description)

    def reap():
        for item in list(running):
            process, claim, log, description = item
            if process.poll() is not None:
                running.remove(item)
                claim.unlink(missing_ok=True)
                status = "done" if process.returncode == 0 else f"STOPPED (exit {process.returncode}, see {log})"
                print(f"{time.strftime('%H:%M:%S')} {description}: {status}", flush=True)

    try:
        for script, env_id, config, seed, steps, flags in todo:
            description = f"{env_id} {config} seed {seed}"
            state = run_state(script, env_id, config, seed, steps, flags)
            if state and state[0] == "finished":
                continue
            while len(running) >= jobs:  # claim only when a slot is free, so others can take what waits here
                time.sleep(1)
                reap()
            claim = claims / f"{env_id.replace('/', '-').replace(':', '-')}__{config}__{seed}"
            if not take_claim(claim):
                print(f"{description}: being trained by another invocation ({claim}), skipped", flush=True)
                continue
            state = run_state(script, env_id, config, seed, steps, flags)  # it may have finished meanwhile
            if state and state[0] == "finished":
                claim.unlink(missing_ok=True)
                continue
            if state:  # stopped with a checkpoint: go on from it, in its run directory
                command = [
                    sys.executable,
                    script,
                    "--resume",
                    os.path.join(state[1], "checkpoint.pt"),
                    *[flag for flag in flags if flag in ("--compile", "--async-envs")],
                ]  # not restored by --resume
            else:
                command = [sys.executable, script, *training_flags(env_id, seed, steps, flags),
                           "--exp-name", f"results-{config}", "--save-model", "--checkpoint-every", "25",
                           "--eval-every", "1000000000", "--eval-episodes", "10"]  # fmt: skip
            log = REPO / "runs" / f".results-{claim.name}.log"
            print(f"{time.strftime('%H:%M:%S')} {description}: {' '.join(command[1:])}", flush=True)
            with open(log, "a") as log_file:
                process = subprocess.Popen(command, cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT)
            write_claim(claim, process.pid, replace=True)  # the training owns the claim, also if this invocation dies
            running.append((process, claim, log, description))
        while running:
            time.sleep(1)
            reap()
    finally:  # Ctrl-C: the trainings got it too; they finish their iteration and save a checkpoint
        for process, claim, _, _ in running:
            process.wait()
            claim.unlink(missing_ok=True)


def training_seconds(run_dir: str) -> float:
    """Wall time of each session, from its TensorBoard log's creation (before the first iteration, so warm-up and
    --compile's compiling count) to its last `charts/SPS` point, added up: every start and every --resume writes
    an events file of its own, so a pause between a stop and its resume does not count."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    seconds = 0.0
    for events_file in sorted(glob.glob(os.path.join(run_dir, "events.out.tfevents.*"))):
        accumulator = EventAccumulator(events_file, size_guidance={"scalars": 0})
        accumulator.Reload()
        if "charts/SPS" in accumulator.Tags()["scalars"]:
            sps = accumulator.Scalars("charts/SPS")
            seconds += sps[-1].wall_time - accumulator.FirstEventTimestamp()
    return seconds


def read_run(run_dir: str) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(run_dir, size_guidance={"scalars": 0})
    accumulator.Reload()
    episodes = accumulator.Scalars("charts/episodic_return")
    sps = accumulator.Scalars("charts/SPS")
    tags = accumulator.Tags()["scalars"]
    return {
        "run": os.path.basename(run_dir),
        "global_step": sps[-1].step,
        "episodes": len(episodes),
        "return_last100": float(np.mean([e.value for e in episodes[-100:]])),
        "eval_return": accumulator.Scalars("eval/episodic_return")[-1].value
        if "eval/episodic_return" in tags
        else None,
        "steps_per_s": sps[-1].value,
        "wall_s": training_seconds(run_dir),
        "curve": [(e.step, e.value) for e in episodes],
    }


def smoothed_curve(episodes: list, grid: np.ndarray) -> np.ndarray:
    """At each grid step, the mean return of the last 100 episodes ended by then (the final figure's rule)."""
    steps = np.array([step for step, _ in episodes])
    returns = np.array([value for _, value in episodes])
    out = np.full(len(grid), np.nan)
    for i, point in enumerate(grid):
        ended = np.searchsorted(steps, point, side="right")
        if ended > 0:
            out[i] = returns[max(0, ended - 100) : ended].mean()
    return out


def collect() -> dict:
    """Every row of RUNS from its finished runs under runs/; a row none of whose runs is here keeps its figures
    from the last results.json (the runs of a table are trained over weeks, on machines that do not keep them)."""
    last = json.loads((OUT / "results.json").read_text())["results"] if (OUT / "results.json").exists() else []
    kept = {(r["env_id"], r["config"]): r for r in last}
    results = []
    for script, env_id, config, seeds, steps, flags in RUNS:
        states = [run_state(script, env_id, config, seed, steps, flags) for seed in seeds]
        finished = [state for state in states if state and state[0] == "finished"]
        runs = []
        for _, run_dir, checkpoint in finished:
            try:
                runs.append({**read_run(run_dir), "seed": checkpoint["args"]["seed"]})
            except (KeyError, IndexError) as error:  # a finished checkpoint without its TensorBoard events
                print(f"skipping {run_dir}: its TensorBoard events lack {error}", flush=True)
        if not runs:
            row = kept.get((env_id, config))
            print(
                f"no finished run of {env_id} {config} under runs/: its row is "
                + ("kept from results.json" if row else "left out"),
                flush=True,
            )
            results += [row] if row else []
            continue
        grid = np.linspace(0, steps, 101)[1:]
        curves = [smoothed_curve(r["curve"], grid) for r in runs]
        finals = [r["return_last100"] for r in runs]
        evals = [r["eval_return"] for r in runs if r["eval_return"] is not None]
        results.append({
            "script": script, "env_id": env_id, "config": config, "total_timesteps": steps, "flags": flags,
            "seeds": [r["seed"] for r in runs], "eval_seeds": len(evals),
            "return_mean": float(np.mean(finals)), "return_std": float(np.std(finals)),
            "eval_mean": float(np.mean(evals)) if evals else None, "eval_std": float(np.std(evals)) if evals else None,
            "published": PUBLISHED.get((env_id, config)),
            "curve": {"steps": grid.astype(int).tolist(),  # the plotted curves: last-100-episode return, per seed
                      "returns": [[None if np.isnan(v) else round(float(v), 1) for v in c] for c in curves]},
            "runs": runs,
        })  # fmt: skip
    return {"machine": machine(), "results": results}


def machine() -> str:
    cpu = "unknown CPU"
    if os.path.exists("/proc/cpuinfo"):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores, {cpu}"


def write(summary: dict):
    if not summary["results"]:  # e.g. runs/ moved away: keep the published results rather than blank them
        sys.exit("no finished run of RUNS under runs/; benchmarks/results/ left as it was")
    OUT.mkdir(parents=True, exist_ok=True)
    lines = [
        f"Machine: {summary['machine']}.",
        "",
        "| env | config | steps | seeds | return (last 100 episodes) | deterministic eval | published "
        "| wall time per run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["results"]:

        def spread(mean, std, count):  # one seed has no spread to show
            return f"{mean:.1f} ± {std:.1f}" if count > 1 else f"{mean:.1f}"

        eval_text = spread(r["eval_mean"], r["eval_std"], r["eval_seeds"]) if r["eval_seeds"] else "–"
        if 0 < r["eval_seeds"] < len(r["seeds"]):  # which seeds it is of
            evaluated = [str(run["seed"]) for run in r["runs"] if run["eval_return"] is not None]
            eval_text += f" (seed{'s' * (len(evaluated) > 1)} {', '.join(evaluated)})"
        wall = np.mean([run["wall_s"] for run in r["runs"]]) / 60
        wall_text = f"{wall:.1f} min" if wall < 10 else f"{wall:.0f} min"  # a 30 s run is not "0 min"
        seeds = ", ".join(str(seed) for seed in r["seeds"])
        lines.append(
            f"| {r['env_id']} | {r['config']} | {r['total_timesteps'] / 1e6:g}M | {seeds} "
            f"| **{spread(r['return_mean'], r['return_std'], len(r['seeds']))}** | {eval_text} | {r['published']} "
            f"| {wall_text} |"
        )
    (OUT / "results.md").write_text("\n".join(lines) + "\n")
    compact = {**summary, "results": [
        {**r, "runs": [{k: v for k, v in run.items() if k != "curve"} for run in r["runs"]]} for r in summary["results"]
    ]}  # fmt: skip
    (OUT / "results.json").write_text(json.dumps(compact, indent=1) + "\n")
    print("\n".join(lines))
    plot(summary)


def plot(summary: dict):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no curves (pip install -r requirements.txt)")
        return
    for env_id in dict.fromkeys(r["env_id"] for r in summary["results"]):
        rows = [r for r in summary["results"] if r["env_id"] == env_id]
        figure, axes = plt.subplots(figsize=(6, 4))
        for r in rows:
            grid = np.array(r["curve"]["steps"])
            curves = np.array([[np.nan if v is None else v for v in c] for c in r["curve"]["returns"]])
            with warnings.catch_warnings():  # grid points before any seed's first episode are NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                mean, low, high = np.nanmean(curves, 0), np.nanmin(curves, 0), np.nanmax(curves, 0)
            seeds = f"{len(r['runs'])} seed" + ("s" if len(r["runs"]) > 1 else "")
            (line,) = axes.plot(grid, mean, label=f"{r['config']} ({seeds})")
            if len(r["runs"]) > 1:
                axes.fill_between(grid, low, high, color=line.get_color(), alpha=0.2)
            published = PUBLISHED_MEAN.get((env_id, r["config"]))
            if published is not None:
                axes.axhline(published, color=line.get_color(), linestyle="--", linewidth=1,
                             label=PUBLISHED[(env_id, r["config"])])  # fmt: skip
        axes.set_title(f"{env_id}: return of the last 100 training episodes (mean, min-max over seeds)", fontsize=8)
        axes.set_xlabel("environment steps")
        axes.set_ylabel("episodic return")
        axes.legend(fontsize=7)
        axes.grid(alpha=0.3)
        figure.tight_layout()
        figure.savefig(OUT / f"{env_id.replace('/', '-')}.png", dpi=100)
        plt.close(figure)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", help="env ids to train (default: all)")
    parser.add_argument("--configs", nargs="+", help="configs to train, e.g. default many-envs (default: all)")
    parser.add_argument("--jobs", type=int, default=1, help="trainings at a time (at most one per core)")
    parser.add_argument("--collect", action="store_true", help="train nothing, only write the results")
    options = parser.parse_args()
    if options.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {options.jobs}")
    unknown = sorted(set(options.only or []) - {env_id for _, env_id, *_ in RUNS})
    if unknown:
        parser.error(f"--only: no runs of {' '.join(unknown)}; choose from {' '.join(sorted({r[1] for r in RUNS}))}")
    unknown = sorted(set(options.configs or []) - {config for _, _, config, *_ in RUNS})
    if unknown:
        parser.error(f"--configs: no {' '.join(unknown)}; choose from {' '.join(sorted({r[2] for r in RUNS}))}")
    if not options.collect:
        try:
            only, configs = (set(names) if names else None for names in (options.only, options.configs))
            train_missing(only, options.jobs, configs)
        except KeyboardInterrupt:  # the trainings got it too, and saved a checkpoint each
            raise SystemExit("stopped by Ctrl-C; run the same command again to go on where the runs stopped")
    write(collect())
