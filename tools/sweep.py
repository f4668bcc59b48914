"""Tune ppo_continuous.py or ppo_discrete.py (or an edited copy) with Optuna, one subprocess per (trial, env, seed).

    python tools/sweep.py ppo_continuous.py --study hopper --env-ids Hopper-v4 --seeds 1 2 --trials 30 --jobs 2 \\
        --space learning-rate=log:1e-5:1e-2 num-minibatches=8,16,32 ent-coef=0:0.01 -- --total-timesteps 300000

--space takes NAME=LOW:HIGH (uniform; whole numbers for an integer flag), NAME=log:LOW:HIGH, or NAME=A,B,C
(choices; true,false for a switch). Every flag after -- goes to every run unchanged. Everything lands in
sweeps/NAME/: the study's journal, the runs, their logs, trials.csv, best.sh and two plots. The same command
run again continues the study; a second one beside it (or on another machine, with --storage) shares it.
docs/sweeps.md has the details.
"""

import argparse
import csv
import difflib
import fcntl
import importlib.util
import math
import os
import re
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.util import tensor_util

LAST_EPISODES = 100  # the final return as CleanRL reports it: the mean of the last 100 training episodes
REPORTS_PER_RUN = 10  # each run reports to the pruner at 10%, 20%, ... of its steps
WARMUP_REPORTS = 3  # no pruning before 30% of a trial's first run: PPO's early returns say little of its last
POLL_S = 1.0  # how often a run's TensorBoard events are read (and a stop or prune is acted on)
HEARTBEAT_S, DEAD_AFTER_S = 30, 300  # a running trial's worker says it is alive; silent this long, it is dead
SET_BY_SWEEP = {"seed": "--seeds", "env-id": "--env-ids", "exp-name": "the sweep, as trial{N}"}


def fail(message: str):
    """Bad input stops here with one line naming the problem and the fix, not a traceback."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


class OneLineParser(argparse.ArgumentParser):
    def error(self, message):  # argparse prints its whole usage first
        fail(f"{message} (see python tools/sweep.py --help)")


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """The sweep's own options, and the flags after -- that every run gets."""
    own, fixed = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    option = parser.add_argument
    option("script", type=Path, help="the training script: ppo_continuous.py, ppo_discrete.py or a copy")
    option("--study", required=True, help="the study's name; its files go to sweeps/NAME/")
    option("--env-ids", nargs="+", required=True, metavar="ENV[=LOW:HIGH]",
           help="the envs each trial trains on; with several, each ENV=LOW:HIGH scales its score to 0..1 over "
                "that range (as CleanRL's tuner does) so that no env dominates the mean")  # fmt: skip
    option("--seeds", nargs="+", type=int, default=[1, 2, 3], help="each trial's score is the mean over these")
    option("--space", nargs="+", required=True, metavar="NAME=RANGE", help="the flags to tune (see above)")
    option("--trials", type=int, default=20, help="how many trials the study runs, all workers together")
    option("--jobs", type=int, default=1, help="trials this worker runs at once (one training per core)")
    option("--objective", choices=["return", "eval"], default="return",
           help="return: the mean of the last 100 training episodes (CleanRL's final return); eval: the last "
                "deterministic evaluation (needs the script's --eval-every N after --)")  # fmt: skip
    option("--pruner", default="median", help="median, hyperband, threshold:LOWEST or none")
    option("--storage", help="a database URL that workers on several machines share, e.g. "
                             "postgresql://user:password@host/db (default: sweeps/NAME/journal.log)")  # fmt: skip
    option("--launcher", default=sys.executable,
           help='what runs the script, e.g. "torchrun --standalone --nproc-per-node 2" (default: python)')  # fmt: skip
    return parser.parse_args(own), fixed


# ---------------------------------------------------------------------------------------------
# The script's flags: what can be tuned or fixed, checked before any run starts


@lru_cache
def read_flags(script: Path) -> dict[str, str]:
    """Each flag of the script, with its metavar as --help shows it (INT, FLOAT, STR, {None}|FLOAT...) or "switch"
    for --X/--no-X. Reading --help instead of importing the script works on any edited copy, and keeps the
    script's imports (torch, gymnasium) out of this process."""
    try:
        wide = {**os.environ, "COLUMNS": "200"}  # one row per flag
        result = subprocess.run([sys.executable, str(script), "--help"], check=False, capture_output=True, text=True,
                                timeout=300, env=wide)  # fmt: skip
    except subprocess.TimeoutExpired:
        fail(f"`python {script} --help` did not answer in 5 minutes; check that the script runs")
    flags = {}
    for line in result.stdout.splitlines():
        # tyro's rows: "│ --learning-rate FLOAT   the learning rate ..." and "│ --anneal-lr, --no-anneal-lr"
        row = re.match(r"[│|]?\s{0,3}--([a-z0-9][a-z0-9-]*)(, --no-\1)?(?: (\S+))?", line)
        if row and row.group(1) != "help":
            flags[row.group(1)] = "switch" if row.group(2) else row.group(3) or ""
    if result.returncode != 0 or not flags:
        last_line = (result.stderr.strip().splitlines() or ["no flags in its --help"])[-1]
        fail(f"could not read the flags of {script} from its --help ({last_line}); check that the script runs")
    return flags


def check_flag(name: str, flags: dict[str, str], script: Path, where: str):
    if name in SET_BY_SWEEP:
        fail(f"--{name} is set for each run by {SET_BY_SWEEP[name]}; remove it from {where}")
    if name not in flags:
        close = difflib.get_close_matches(name, flags, n=1)
        hint = f"did you mean --{close[0]}?" if close else f"see python {script} --help"
        fail(f"{script} has no flag --{name} (in {where}); {hint}")


def parse_value(text: str, metavar: str, what: str):
    """One value of a flag, as the run will receive it: checked here, because tyro's own errors span many lines."""
    if text.lower() == "none" and metavar.startswith("{None}|"):
        return None
    try:
        if metavar == "switch":
            return {"true": True, "false": False}[text.lower()]
        if "INT" in metavar:
            return int(text)
        if "FLOAT" in metavar:
            return float(text)
        return text
    except (KeyError, ValueError):
        kind = {"switch": "true or false"}.get(metavar, "an integer" if "INT" in metavar else "a number")
        fail(f"{what}: expected {kind}, got {text!r}")


def parse_space(specs: list[str], flags: dict[str, str], script: Path) -> dict:
    """--space NAME=LOW:HIGH, NAME=log:LOW:HIGH or NAME=A,B,C as Optuna distributions, named by flag."""
    space = {}
    for spec in specs:
        name, _, values = spec.partition("=")
        name = name.removeprefix("--")
        check_flag(name, flags, script, "--space")
        metavar, what = flags[name], f"--space {spec}"
        if "," in values:
            choices = [parse_value(value, metavar, what) for value in values.split(",")]
            if len(set(choices)) < 2:
                fail(f"{what}: give at least two different choices, or fix the flag after --")
            space[name] = CategoricalDistribution(choices)
            continue
        log = values.startswith("log:")
        bounds = values.removeprefix("log:").split(":")
        if len(bounds) != 2 or metavar == "switch" or not ("INT" in metavar or "FLOAT" in metavar):
            fail(f"{what}: give NAME=LOW:HIGH, NAME=log:LOW:HIGH or NAME=A,B,C (a switch or text flag: choices)")
        low, high = (parse_value(bound, metavar.removeprefix("{None}|"), what) for bound in bounds)
        if not low < high or (log and low <= 0):
            fail(f"{what}: the range needs LOW < HIGH{' and LOW > 0 on a log scale' if log else ''}")
        distribution = IntDistribution if isinstance(low, int) else FloatDistribution
        space[name] = distribution(low, high, log=log)
    return space


def check_fixed_flags(fixed: list[str], flags: dict[str, str], script: Path, space: dict):
    """Each flag after -- must exist, be tuned nowhere, and get a value of its type."""
    for position, token in enumerate(fixed):
        if not token.startswith("--"):
            continue  # a flag's value
        name, equals, value = token[2:].partition("=")
        if name.startswith("no-") and flags.get(name[3:]) == "switch":
            name = name[3:]
        check_flag(name, flags, script, "the flags after --")
        if name in space:
            fail(f"--{name} is both tuned (--space) and fixed (after --); keep one")
        if flags[name].removeprefix("{None}|") in ("INT", "FLOAT"):  # a single number: check it now
            value = value if equals else (fixed[position + 1] if position + 1 < len(fixed) else "")
            parse_value(value, flags[name], f"--{name} {value}")


def as_flags(name: str, value) -> list[str]:
    """A sampled value as the script's flags: str() of a float gives it back exactly, so the run gets what Optuna
    sampled; a switch is --X or --no-X."""
    if isinstance(value, bool):
        return [f"--{name}" if value else f"--no-{name}"]
    return [f"--{name}", str(value)]


# ---------------------------------------------------------------------------------------------
# The sweep: its checked options, and the study they belong to


@dataclass
class Sweep:
    script: Path  # as typed, for the commands people read
    study_name: str
    folder: Path  # sweeps/NAME/
    envs: dict  # env id -> (low, high) score range, or None
    seeds: list[int]
    space: dict  # flag name -> Optuna distribution
    fixed: list[str]
    trials: int
    jobs: int
    objective: str
    launcher: list[str]

    def flags(self, params: dict, env_id: str) -> list[str]:
        """A run's flags, less its seed and name: the env, the trial's parameters, then the fixed flags."""
        tuned = [flag for name, value in params.items() for flag in as_flags(name, value)]
        return ["--env-id", env_id, *tuned, *self.fixed]

    def scaled(self, env_id: str, value: float) -> float:
        low_high = self.envs[env_id]
        return value if low_high is None else (value - low_high[0]) / (low_high[1] - low_high[0])


def parse_score_range(text: str, what: str) -> tuple[float, float]:
    try:
        low, high = (float(bound) for bound in text.split(":"))
    except ValueError:
        fail(f"{what}: a score range is LOW:HIGH, e.g. Hopper-v4=0:3500")
    if not low < high:
        fail(f"{what}: the score range needs LOW < HIGH")
    return low, high


def make_sweep(args: argparse.Namespace, fixed: list[str]) -> Sweep:
    """Every option checked, before anything is written or any run starts."""
    if not args.script.is_file():
        fail(f"script {args.script} does not exist; give the path to ppo_continuous.py, ppo_discrete.py or a copy")
    if not re.fullmatch(r"[\w.-]+", args.study):
        fail(f"--study {args.study!r}: use letters, digits, '.', '_' or '-' (it names the folder sweeps/NAME/)")
    if args.trials < 1 or args.jobs < 1:
        fail("--trials and --jobs must be at least 1")
    envs = {}
    for spec in args.env_ids:
        env_id, _, score_range = spec.partition("=")
        envs[env_id] = parse_score_range(score_range, f"--env-ids {spec}") if score_range else None
    if len(envs) > 1 and None in envs.values():
        fail("with several --env-ids give each a score range, e.g. --env-ids Hopper-v4=0:3500 Walker2d-v4=0:5000, "
             "so that no env dominates the mean")  # fmt: skip
    if args.storage is not None and "://" not in args.storage:
        fail(f"--storage {args.storage!r} is not a database URL (e.g. postgresql://user:password@host/db); "
             "without --storage the study lives in sweeps/NAME/journal.log")  # fmt: skip
    if args.pruner not in ("median", "hyperband", "none") and not re.fullmatch(r"threshold:[-+.\deE]+", args.pruner):
        fail(f"--pruner {args.pruner}: choose median, hyperband, threshold:LOWEST (e.g. threshold:500) or none")
    flags = read_flags(args.script)
    space = parse_space(args.space, flags, args.script)
    check_fixed_flags(fixed, flags, args.script, space)
    if (
        args.objective == "eval"
        and "eval-every" not in space
        and not any(token.split("=")[0] == "--eval-every" for token in fixed)
    ):
        fail("--objective eval needs evaluations during training: add the script's --eval-every N after --")
    return Sweep(args.script, args.study, Path("sweeps") / args.study, envs, args.seeds, space, fixed, args.trials,
                 args.jobs, args.objective, shlex.split(args.launcher))  # fmt: skip


def make_pruner(spec: str) -> optuna.pruners.BasePruner:
    if spec == "median":  # as rl-baselines3-zoo: compared with the median of the finished trials at the same report
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=WARMUP_REPORTS)
    if spec == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=WARMUP_REPORTS)
    if spec.startswith("threshold:"):  # a run whose return is still below this is stopped
        return optuna.pruners.ThresholdPruner(lower=float(spec.split(":")[1]), n_warmup_steps=WARMUP_REPORTS)
    return optuna.pruners.NopPruner()


def open_study(sweep: Sweep, storage_url: str | None, pruner: str) -> optuna.Study:
    """Create the study, or load it to continue: the same command run again goes on where it stopped."""
    try:
        if storage_url is None:
            # Optuna's journal: one append-only file, locked for each write, that any number of workers on this
            # machine share safely. SQLite is what Optuna's docs advise against for parallel workers (its writers
            # block each other: "database is locked"), and a database server is more than one machine needs.
            sweep.folder.mkdir(parents=True, exist_ok=True)
            storage = JournalStorage(JournalFileBackend(str(sweep.folder / "journal.log")))
        else:
            storage = optuna.storages.RDBStorage(storage_url)
        # constant_liar: parallel trials count as running, so that two workers do not sample the same point
        sampler = optuna.samplers.TPESampler(constant_liar=True)
        study = optuna.create_study(storage=storage, study_name=sweep.study_name, direction="maximize",
                                    sampler=sampler, pruner=make_pruner(pruner), load_if_exists=True)  # fmt: skip
    except Exception as error:  # noqa: BLE001  (a wrong URL, no server, no driver, no permission: it says which)
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        fail(f"cannot open the storage {shown(storage_url, sweep.folder)} ({reason}); check the URL, the server "
             "and its driver (e.g. pip install 'psycopg[binary]' for postgresql://)")  # fmt: skip
    # a study continues only with the options it started with: its trials must stay comparable
    env_ids = [f"{env}={low_high[0]:g}:{low_high[1]:g}" if low_high else env for env, low_high in sweep.envs.items()]
    space = {name: repr(distribution) for name, distribution in sweep.space.items()}
    options = {"script": sweep.script.name, "env-ids": env_ids, "seeds": sweep.seeds, "space": space,
               "fixed": sweep.fixed, "objective": sweep.objective}  # fmt: skip
    started_with = study.user_attrs.get("options")
    if started_with is None:
        study.set_user_attr("options", options)
    elif started_with != options:
        key = next(key for key in options if started_with.get(key) != options[key])
        fail(f"study {sweep.study_name} was started with {key} {started_with.get(key)}, not {options[key]}; "
             "continue it with the same options, or give a new --study")  # fmt: skip
    return study


def shown(storage_url: str | None, folder: Path) -> str:
    """The storage as printed: a URL's password replaced by ***."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", storage_url) if storage_url else str(folder / "journal.log")


# ---------------------------------------------------------------------------------------------
# One run: a subprocess of the script, its progress read from its TensorBoard events


class RunEvents:
    """What a run has logged so far, read incrementally while it trains (only what is new on each read)."""

    def __init__(self):
        self.loader = None
        self.returns, self.evaluations = [], []  # (global step, value)
        self.last_step, self.total_timesteps = 0, None

    def read(self, run_dir: Path):
        if self.loader is None:
            event_files = sorted(run_dir.glob("events.out.tfevents.*"))
            if not event_files:
                return
            self.loader = EventFileLoader(str(event_files[0]))
        for event in self.loader.Load():  # stops at a record the script is still writing; the next read has it
            self.last_step = max(self.last_step, event.step)
            for value in event.summary.value:
                if value.tag == "charts/episodic_return":
                    self.returns.append((event.step, tensor_util.make_ndarray(value.tensor).item()))
                elif value.tag == "eval/episodic_return":
                    self.evaluations.append((event.step, tensor_util.make_ndarray(value.tensor).item()))
                elif value.tag.startswith("hyperparameters"):  # the |param|value| table of every Args field
                    table = value.tensor.string_val[0].decode()
                    self.total_timesteps = int(re.search(r"\|total_timesteps\|(\d+)\|", table).group(1))

    def score(self, objective: str, up_to_step: float = math.inf) -> float | None:
        """The objective from the events up to a step: the mean of the last 100 episodes, or the last evaluation."""
        if objective == "eval":
            values = [value for step, value in self.evaluations if step <= up_to_step][-1:]
        else:
            values = [value for step, value in self.returns if step <= up_to_step][-LAST_EPISODES:]
        return statistics.fmean(values) if values else None


@dataclass
class RunResult:
    outcome: str  # "finished", "pruned", "stopped" (the sweep or a signal stopped it) or "failed"
    score: float | None = None
    message: str = ""


def train(sweep: Sweep, trial: optuna.Trial, env_id: str, seed: int, run_index: int, stopping: threading.Event):
    """Run the script once, report its score to Optuna at each tenth of its steps, and stop it with SIGTERM (it
    finishes the iteration and closes its logs) when the pruner says so or the sweep stops."""
    exp_name = f"trial{trial.number}"  # run folders: sweeps/NAME/runs/{env}__trial{N}__{seed}__{time}
    runs_dir = sweep.folder / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    earlier = set(runs_dir.glob(f"*__{exp_name}__{seed}__*"))  # this trial's runs are one after another
    log_path = sweep.folder / "logs" / f"{exp_name}_{env_id.replace('/', '-')}_seed{seed}.log"
    log_path.parent.mkdir(exist_ok=True)
    command = [*sweep.launcher, str(sweep.script.resolve()), *sweep.flags(trial.params, env_id), "--seed", str(seed),
               "--exp-name", exp_name]  # fmt: skip
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=sweep.folder, stdout=log, stderr=subprocess.STDOUT)
    # the steps Optuna sees: run k's reports are k*10+1 ... k*10+10, the same for every trial, so that the
    # pruner compares runs of the same env and seed at the same point of training
    events, run_dir, reports, pruned, signalled, heartbeat = RunEvents(), None, 0, False, False, time.time()
    try:
        while True:
            returncode = process.poll()  # before the last read, so that it sees everything the run wrote
            run_dir = run_dir or next(iter(set(runs_dir.glob(f"*__{exp_name}__{seed}__*")) - earlier), None)
            if run_dir is not None:
                events.read(run_dir)
            while events.total_timesteps and reports + 1 < REPORTS_PER_RUN and not pruned:
                report_step = (reports + 1) * events.total_timesteps / REPORTS_PER_RUN
                if events.last_step <= report_step:
                    break  # episodes up to this step may still be on their way
                reports += 1
                value = events.score(sweep.objective, up_to_step=report_step)
                if value is not None:
                    trial.report(sweep.scaled(env_id, value), step=run_index * REPORTS_PER_RUN + reports)
                    if trial.should_prune():
                        trial.set_user_attr("pruned at", f"{env_id} seed {seed}, {10 * reports}% of its steps")
                        pruned = True
            if returncode is not None:
                break
            if (pruned or stopping.is_set()) and not signalled:
                process.send_signal(signal.SIGTERM)
                signalled = True
            if time.time() - heartbeat > HEARTBEAT_S:
                trial.set_user_attr("heartbeat", time.time())
                heartbeat = time.time()
            try:
                process.wait(timeout=POLL_S)  # returns as soon as the run ends
            except subprocess.TimeoutExpired:
                pass
    finally:
        if process.poll() is None:  # this thread failed (a storage error, say): the run must not train on alone
            process.terminate()
            process.wait()
    if pruned:
        return RunResult("pruned")
    if returncode != 0 and (stopping.is_set() or returncode == 130):  # 130: the script stopped on a signal
        return RunResult("stopped")
    if returncode != 0:
        last_line = ([line for line in log_path.read_text().splitlines() if line.strip()] or ["no output"])[-1]
        return RunResult("failed", message=f"{last_line.strip()} (exit status {returncode}, log {log_path})")
    score = events.score(sweep.objective)
    if score is None:
        what = "no evaluation ran" if sweep.objective == "eval" else "no episode ended"
        return RunResult("failed", message=f"{what}; give it more --total-timesteps (log {log_path})")
    trial.report(sweep.scaled(env_id, score), step=(run_index + 1) * REPORTS_PER_RUN)
    return RunResult("finished", score)


# ---------------------------------------------------------------------------------------------
# Trials: asked for under a lock, run one (env, seed) after another, told back to the study


def run_trial(study: optuna.Study, sweep: Sweep, trial: optuna.Trial, stopping: threading.Event) -> RunResult:
    """Each env and seed in turn; the trial's score is the mean over seeds, averaged over envs (scaled)."""
    scores = {env_id: {} for env_id in sweep.envs}
    runs = [(env_id, seed) for env_id in sweep.envs for seed in sweep.seeds]
    for run_index, (env_id, seed) in enumerate(runs):
        result = train(sweep, trial, env_id, seed, run_index, stopping)
        if result.outcome != "finished":
            break
        scores[env_id][str(seed)] = result.score
        trial.set_user_attr("scores", scores)
        if run_index + 1 < len(runs) and trial.should_prune():  # between seeds too: its final return so far
            trial.set_user_attr("pruned at", f"{env_id} seed {seed}, at its end")
            result = RunResult("pruned")
            break
    if result.outcome == "finished":
        result.score = statistics.fmean(
            sweep.scaled(env_id, statistics.fmean(by_seed.values())) for env_id, by_seed in scores.items()
        )
        study.tell(trial, result.score)
    elif result.outcome == "pruned":
        study.tell(trial, state=TrialState.PRUNED)
    elif result.outcome == "stopped":  # not the trial's fault: the same parameters run again when the sweep goes on
        study.tell(trial, state=TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"retry of": trial.number})
    else:  # the run's own failure (a flag combination the script refuses, a crash): it counts as a trial
        result.message = f"{env_id} seed {seed}: {result.message}"
        trial.set_user_attr("error", result.message)
        study.tell(trial, state=TrialState.FAIL)
    return result


def counted_trials(study: optuna.Study) -> list:
    """The trials that count towards --trials: finished, pruned, running, or failed by their own run. A trial
    stopped with the sweep or lost with its worker does not count: its parameters are queued to run again."""
    return [trial for trial in study.get_trials(deepcopy=False)
            if trial.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
            or (trial.state == TrialState.FAIL and "error" in trial.user_attrs)]  # fmt: skip


def retry_dead_trials(study: optuna.Study):
    """A trial whose worker died (killed, out of memory, machine lost) would stay RUNNING forever: fail it and
    queue its parameters again. Its worker is dead if it ran on this machine and its process is gone, or if it
    has not written its heartbeat for DEAD_AFTER_S (a worker on another machine; their clocks must agree)."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker")  # "host:pid", written as the trial was asked for
        host, _, pid = worker.rpartition(":") if worker else ("", "", "")
        process_gone = host == socket.gethostname() and not process_exists(int(pid))
        silent = time.time() - trial.user_attrs.get("heartbeat", trial.datetime_start.timestamp()) > DEAD_AFTER_S
        if process_gone or silent:
            try:
                study.tell(trial.number, state=TrialState.FAIL)
            except (UpdateFinishedTrialError, ValueError):
                continue  # a worker on another machine failed it first
            study.enqueue_trial(trial.params, user_attrs={"retry of": trial.number})


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's
        return True
    return True


def next_trial(study: optuna.Study, sweep: Sweep) -> optuna.Trial | None:
    """A new trial (or a queued retry) while the study needs one. A lock file makes counting and asking one
    step for every worker on this machine, so that together they run exactly --trials trials."""
    with open(sweep.folder / "ask.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        retry_dead_trials(study)
        if len(counted_trials(study)) >= sweep.trials:
            return None
        trial = study.ask(sweep.space)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        trial.set_user_attr("heartbeat", time.time())
        return trial


# ---------------------------------------------------------------------------------------------
# What a person reads: a line per trial, a progress bar, trials.csv, best.sh, plots


class Display:
    """One line per finished trial; on a terminal, also a live bar of the study below them."""

    def __init__(self, sweep: Sweep, done: int):
        self.bar = None
        self.lock = threading.Lock()  # for what the worker threads share: the console, the result files, the tally
        if sys.stdout.isatty() and importlib.util.find_spec("rich"):  # the bar is optional: `pip install rich`
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn("trials"), BarColumn(), TextColumn("{task.description}"), TimeElapsedColumn()
            )
            self.task = self.bar.add_task("", total=sweep.trials, completed=done)
            self.bar.start()

    def line(self, text: str):
        with self.lock:
            if self.bar is not None:
                self.bar.console.print(text, markup=False, highlight=False)
            else:
                print(text, flush=True)

    def update(self, done: int, status: str):
        if self.bar is not None:
            self.bar.update(self.task, completed=done, description=status)

    def close(self):
        if self.bar is not None:
            self.bar.stop()


def format_params(params: dict) -> str:
    return " ".join(
        f"{name}={value:.4g}" if isinstance(value, float) else f"{name}={value}" for name, value in params.items()
    )


def study_status(study: optuna.Study, sweep: Sweep) -> tuple[int, str]:
    """(trials done, a status line): how many are done and running, and the best score so far."""
    trials = study.get_trials(deepcopy=False)
    done = sum(trial.state.is_finished() for trial in counted_trials(study))
    running = sum(trial.state == TrialState.RUNNING for trial in trials)
    complete = [trial for trial in trials if trial.state == TrialState.COMPLETE]
    best = max(complete, key=lambda trial: trial.value, default=None)
    best_text = "no trial complete yet" if best is None else f"best {best.value:.4g} (trial {best.number})"
    return done, f"{done}/{sweep.trials} done, {running} running, {best_text}"


def trial_line(study: optuna.Study, sweep: Sweep, trial: optuna.Trial, result: RunResult, seconds: float) -> str:
    frozen = study.get_trials(deepcopy=False)[trial.number]
    head = f"trial {trial.number} {result.outcome}"
    if result.outcome == "finished":
        head += f": {result.score:.4g}"
        for env, by_seed in frozen.user_attrs["scores"].items():  # the env's mean, then each seed's score
            seed_scores = ", ".join(f"{score:.1f}" for score in by_seed.values())
            head += f"  {env} {statistics.fmean(by_seed.values()):.1f} ({seed_scores})"
    elif result.outcome == "pruned":
        head += f" at {frozen.user_attrs.get('pruned at')}"
    elif result.outcome == "stopped":
        head += " with the sweep; it runs again when the sweep continues"
    else:
        head += f": {result.message}"
    return f"{head}  |  {format_params(trial.params)}  |  {seconds / 60:.1f} min  |  {study_status(study, sweep)[1]}"


def write_results(study: optuna.Study, sweep: Sweep):
    """trials.csv (parameters, per-env and per-seed scores, state, wall time) and best.sh (the best trial's command
    for each env); each written whole to a temporary file first, as another worker may be writing it too."""
    trials = study.get_trials(deepcopy=False)
    retried_as = {trial.user_attrs["retry of"]: trial.number for trial in trials if "retry of" in trial.user_attrs}
    seed_columns = [(env, str(seed)) for env in sweep.envs for seed in sweep.seeds]
    seed_headers = [f"{env} seed {seed}" for env, seed in seed_columns]
    header = ["trial", "state", "score", *sweep.space, *sweep.envs, *seed_headers, "minutes", "note"]
    rows = [header]
    for trial in trials:
        scores = trial.user_attrs.get("scores", {})
        env_means = [statistics.fmean(scores[env].values()) if scores.get(env) else "" for env in sweep.envs]
        ended, started = trial.datetime_complete, trial.datetime_start
        minutes = f"{(ended - started).total_seconds() / 60:.1f}" if ended and started else ""
        note = trial.user_attrs.get("error") or trial.user_attrs.get("pruned at", "")
        if trial.number in retried_as:
            note = f"stopped; queued again as trial {retried_as[trial.number]}"
        elif "retry of" in trial.user_attrs:
            note = f"{note} (runs trial {trial.user_attrs['retry of']} again)".strip()
        rows.append([trial.number, trial.state.name, "" if trial.value is None else trial.value,
                     *(trial.params.get(name, "") for name in sweep.space), *env_means,
                     *(scores.get(env, {}).get(seed, "") for env, seed in seed_columns), minutes, note])  # fmt: skip
    write_atomically(sweep.folder / "trials.csv", lambda file: csv.writer(file).writerows(rows))
    complete = [trial for trial in trials if trial.state == TrialState.COMPLETE]
    if complete:
        best = max(complete, key=lambda trial: trial.value)
        lines = [f"# the best trial of study {sweep.study_name}: trial {best.number}, score {best.value:.4g}"]
        lines += [shlex.join(["python", str(sweep.script), *sweep.flags(best.params, env)]) for env in sweep.envs]
        write_atomically(sweep.folder / "best.sh", lambda file: file.write("\n".join(lines) + "\n"))


def write_atomically(path: Path, write, mode: str = "w"):
    """Writes through a temporary file named for this process and thread, so that two workers never share one."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    try:
        with open(temporary, mode, newline=None if "b" in mode else "") as file:
            write(file)
        os.replace(temporary, path)
    finally:  # a failed write leaves the file before it as it was, and no temporary file
        temporary.unlink(missing_ok=True)


def write_plots(study: optuna.Study, sweep: Sweep) -> list[str]:
    """history.png and importances.png, drawn by Optuna with matplotlib (imported here: only the end needs it).
    The importances are Optuna's default (PED-ANOVA), which needs no scikit-learn."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no window
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    complete = [trial for trial in study.get_trials(deepcopy=False) if trial.state == TrialState.COMPLETE]
    plots = {"history.png": optuna_plots.plot_optimization_history}
    if len(complete) >= 2:  # importances compare trials with each other
        plots["importances.png"] = optuna_plots.plot_param_importances
    written = []
    for name, plot in plots.items() if complete else ():
        axes = plot(study)
        figure, options = axes.figure, dict(dpi=120, bbox_inches="tight", format="png")
        try:
            write_atomically(sweep.folder / name, lambda file: figure.savefig(file, **options), mode="wb")
        finally:
            plt.close(figure)
        written.append(name)
    return written


# ---------------------------------------------------------------------------------------------


def worker(study: optuna.Study, sweep: Sweep, stopping: threading.Event, display: Display, tally: dict):
    """One of --jobs threads: trials one after another until the study has enough or the sweep stops."""
    try:
        while not stopping.is_set():
            trial = next_trial(study, sweep)
            if trial is None:
                return
            display.update(*study_status(study, sweep))
            started = time.time()
            try:
                result = run_trial(study, sweep, trial, stopping)
            except UpdateFinishedTrialError:  # silent too long: another worker gave the trial up and queued it again
                display.line(f"trial {trial.number} was given up as dead by another worker; its run here stopped")
                continue
            with display.lock:
                write_results(study, sweep)
                tally["done"] += 1
                tally["failed"] += result.outcome == "failed"
            display.line(trial_line(study, sweep, trial, result, time.time() - started))
            display.update(*study_status(study, sweep))
            if tally["done"] >= 3 and tally["failed"] == tally["done"]:  # a broken setup, not bad parameters
                tally["broken"] = result.message
                stopping.set()
    except BaseException as error:  # noqa: BLE001  (main raises it once the other threads have stopped their runs)
        tally["error"] = error
        stopping.set()


def main(argv: list[str] | None = None) -> int:
    args, fixed = parse_args(sys.argv[1:] if argv is None else argv)
    sweep = make_sweep(args, fixed)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the sweep prints its own line per trial
    warnings.filterwarnings("ignore", category=ExperimentalWarning)  # constant_liar, the matplotlib plots
    study = open_study(sweep, args.storage, args.pruner)
    sweep.folder.mkdir(parents=True, exist_ok=True)
    done, status = study_status(study, sweep)
    storage = shown(args.storage, sweep.folder)
    print(f"study {sweep.study_name} ({storage}): {status}; runs in {sweep.folder / 'runs'}, logs in "
          f"{sweep.folder / 'logs'}", flush=True)  # fmt: skip

    display, stopping, tally = Display(sweep, done), threading.Event(), {"done": 0, "failed": 0}
    threads = [threading.Thread(target=worker, args=(study, sweep, stopping, display, tally), daemon=True)
               for _ in range(sweep.jobs)]  # fmt: skip
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a scheduler's SIGTERM stops the sweep as Ctrl-C does
    exit_code = 0
    try:
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):
            time.sleep(0.5)
    except KeyboardInterrupt:
        display.line("stopping: each run finishes its iteration, and its trial runs again when the sweep continues "
                     "(Ctrl-C again to leave at once)")  # fmt: skip
        stopping.set()
        exit_code = 130
        try:
            while any(thread.is_alive() for thread in threads):
                time.sleep(0.5)
        except KeyboardInterrupt:  # the running trials stay RUNNING until a worker finds their process gone
            display.close()
            return 130
    display.close()
    if "error" in tally:
        raise tally["error"]
    if "broken" in tally:
        print(f"error: this sweep's first {tally['done']} trials all failed, the last with: {tally['broken']}",
              file=sys.stderr, flush=True)  # fmt: skip
        return 1

    write_results(study, sweep)
    written = write_plots(study, sweep)
    print(study_status(study, sweep)[1], flush=True)
    files = ["trials.csv", *written]
    if (sweep.folder / "best.sh").exists():
        print((sweep.folder / "best.sh").read_text(), end="", flush=True)
        files.insert(1, "best.sh")
    print(f"in {sweep.folder}: {', '.join(files)}; `tensorboard --logdir {sweep.folder / 'runs'}`; "
          f"`optuna-dashboard {storage}`", flush=True)  # fmt: skip
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
