"""tools/sweep.py on tiny CartPole runs: the files it writes, sampled values reaching the runs, the objective,
stopping and continuing, a dead worker, two workers on one study, pruning, and one-line errors for bad input."""

import csv
import importlib
import os
import shlex
import signal
import statistics
import subprocess
import sys
import time

import optuna
import pytest
from conftest import REPO, read_scalars, run_script
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState

sys.path.insert(0, str(REPO / "tools"))
sweep = importlib.import_module("sweep")  # tools/ is not a package: imported from its folder

pytestmark = pytest.mark.xdist_group("sweep")  # one worker runs them all, and the module's sweep once
SCRIPT = REPO / "ppo_discrete.py"
TINY = ["--num-envs", "2", "--num-steps", "32", "--num-minibatches", "2", "--total-timesteps", "2000"]
LONG = [*TINY[:-1], "40000"]  # seconds of training (not a fraction of one): a test's stop lands in the middle of it
SPACE = ["learning-rate=log:1e-4:1e-2", "update-epochs=1:3", "ent-coef=0:0.02", "norm-adv=true,false"]


def sweep_command(study, *options, fixed=TINY):
    return [sys.executable, str(REPO / "tools" / "sweep.py"), str(SCRIPT), "--study", study, "--env-ids",
            "CartPole-v1", "--space", *SPACE, *options, "--", *fixed]  # fmt: skip


def run_sweep(cwd, study, *options, fixed=TINY):
    result = subprocess.run(sweep_command(study, *options, fixed=fixed), cwd=cwd, check=False, capture_output=True,
                            text=True, timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def start_sweep(cwd, study, *options, fixed=TINY):
    """A sweep in its own process group, so that a test can kill it together with its runs."""
    return subprocess.Popen(sweep_command(study, *options, fixed=fixed), cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)  # fmt: skip


def load_study(cwd, study):
    storage = JournalStorage(JournalFileBackend(str(cwd / "sweeps" / study / "journal.log")))
    return optuna.load_study(study_name=study, storage=storage)


def wait_for(condition, timeout=120):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.2)


def run_dirs(cwd, study, trial_number, seed="*"):
    return sorted((cwd / "sweeps" / study / "runs").glob(f"CartPole-v1__trial{trial_number}__{seed}__*"))


def saved_flags(run_dir):
    """The run's own record of its flags: the TensorBoard "hyperparameters" table, {field: value as text}."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    accumulator.Reload()
    table = accumulator.Tensors("hyperparameters/text_summary")[0].tensor_proto.string_val[0].decode()
    return dict(row.strip("|").split("|") for row in table.splitlines()[2:])


# ---------------------------------------------------------------------------------------------
# One sweep, read by several tests: 3 trials x 2 seeds, two at a time


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("sweep")
    result = run_sweep(cwd, "tiny", "--seeds", "1", "2", "--trials", "3", "--jobs", "2")
    return cwd, result, load_study(cwd, "tiny")


def test_sweep_prints_a_line_per_trial_and_writes_its_files(tiny_sweep):
    cwd, result, _ = tiny_sweep
    folder = cwd / "sweeps" / "tiny"
    assert len([line for line in result.stdout.splitlines() if line.startswith("trial ")]) == 3
    with open(folder / "trials.csv") as file:
        rows = list(csv.DictReader(file))
    assert [row["state"] for row in rows] == ["COMPLETE"] * 3
    for row in rows:
        seeds = [float(row["CartPole-v1 seed 1"]), float(row["CartPole-v1 seed 2"])]
        assert float(row["score"]) == pytest.approx(statistics.fmean(seeds))
        assert float(row["minutes"]) > 0
        assert {row[name] for name in ("learning-rate", "update-epochs", "ent-coef", "norm-adv")} != {""}
    for plot in ("history.png", "importances.png"):
        assert (folder / plot).read_bytes().startswith(b"\x89PNG"), plot
    best = max(rows, key=lambda row: float(row["score"]))
    command = (folder / "best.sh").read_text().splitlines()[-1]
    assert f"--learning-rate {best['learning-rate']}" in command and "--env-id CartPole-v1" in command


def test_every_sampled_value_reaches_its_runs(tiny_sweep):
    cwd, _, study = tiny_sweep
    assert len(study.trials) == 3
    for trial in study.trials:
        for seed in ("1", "2"):
            (run_dir,) = run_dirs(cwd, "tiny", trial.number, seed)
            flags = saved_flags(run_dir)
            assert flags["seed"] == seed and flags["total_timesteps"] == "2000"
            for name, value in trial.params.items():
                assert flags[name.replace("-", "_")] == str(value), (trial.number, name)


def test_trial_score_is_the_mean_over_seeds_of_the_last_100_training_returns(tiny_sweep):
    cwd, _, study = tiny_sweep
    for trial in study.trials:
        per_seed = []
        for seed in ("1", "2"):
            returns = [
                value
                for _, value in read_scalars(run_dirs(cwd, "tiny", trial.number, seed)[0])["charts/episodic_return"]
            ]
            per_seed.append(sum(returns[-100:]) / len(returns[-100:]))
        assert trial.value == pytest.approx(sum(per_seed) / 2, rel=1e-6)


def test_best_command_runs_the_best_trial(tiny_sweep, tmp_path):
    cwd, _, study = tiny_sweep
    command = shlex.split((cwd / "sweeps" / "tiny" / "best.sh").read_text().splitlines()[-1])
    assert command[:2] == ["python", str(SCRIPT)]
    result = run_script(SCRIPT.name, *command[2:], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    flags = saved_flags(next((tmp_path / "runs").iterdir()))
    for name, value in study.best_trial.params.items():
        assert flags[name.replace("-", "_")] == str(value)


def test_study_continued_with_other_options_is_refused(tiny_sweep, monkeypatch, capsys):
    cwd, _, _ = tiny_sweep
    monkeypatch.chdir(cwd)
    with pytest.raises(SystemExit):
        sweep.main(sweep_command("tiny", "--seeds", "1", "2", "3")[2:])
    assert capsys.readouterr().err.startswith("error: study tiny was started with seeds [1, 2], not [1, 2, 3]")


# ---------------------------------------------------------------------------------------------
# Stopping, dead workers, several workers, pruning


def test_sweep_stopped_and_started_again_counts_every_trial_once(tmp_path):
    process = start_sweep(tmp_path, "resume", "--seeds", "1", "--trials", "2", fixed=LONG)
    wait_for(lambda: run_dirs(tmp_path, "resume", 1))  # trial 0 has finished, trial 1 is training
    process.send_signal(signal.SIGTERM)  # as a scheduler (or Ctrl-C) would
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 130, output
    study = load_study(tmp_path, "resume")
    assert [trial.state for trial in study.trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.WAITING]
    assert "stopped at step" in (tmp_path / "sweeps/resume/logs/trial1_CartPole-v1_seed1.log").read_text()

    run_sweep(tmp_path, "resume", "--seeds", "1", "--trials", "2", fixed=LONG)
    study = load_study(tmp_path, "resume")
    assert [trial.state for trial in study.trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert study.trials[2].params == study.trials[1].params  # the stopped trial ran again, and nothing else did
    with open(tmp_path / "sweeps/resume/trials.csv") as file:
        assert [row["trial"] for row in csv.DictReader(file)] == ["0", "1", "2"]


def test_trial_of_a_killed_worker_runs_again(tmp_path):
    process = start_sweep(tmp_path, "killed", "--seeds", "1", "--trials", "1", fixed=LONG)
    wait_for(lambda: run_dirs(tmp_path, "killed", 0))
    os.killpg(process.pid, signal.SIGKILL)  # the worker and its run die at once, as with a lost machine
    process.wait()
    assert load_study(tmp_path, "killed").trials[0].state == TrialState.RUNNING  # left behind by the dead worker

    run_sweep(tmp_path, "killed", "--seeds", "1", "--trials", "1", fixed=LONG)
    study = load_study(tmp_path, "killed")
    assert [trial.state for trial in study.trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert study.trials[1].params == study.trials[0].params
    assert study.trials[1].user_attrs["retry of"] == 0


def test_two_workers_on_one_study_lose_and_repeat_no_trial(tmp_path):
    workers = [start_sweep(tmp_path, "shared", "--seeds", "1", "--trials", "4") for _ in range(2)]
    for process in workers:
        output, _ = process.communicate(timeout=300)
        assert process.returncode == 0, output
    study = load_study(tmp_path, "shared")
    assert [trial.number for trial in study.trials] == [0, 1, 2, 3]
    assert all(trial.state == TrialState.COMPLETE for trial in study.trials)
    assert len({trial.user_attrs["worker"] for trial in study.trials}) == 2  # both workers ran trials
    for trial in study.trials:
        (run_dir,) = run_dirs(tmp_path, "shared", trial.number)  # each trial trained exactly once
        assert saved_flags(run_dir)["learning_rate"] == str(trial.params["learning-rate"])
    folder = tmp_path / "sweeps/shared"  # both workers wrote the end's files, each through its own temporary file
    assert all((folder / name).read_bytes().startswith(b"\x89PNG") for name in ("history.png", "importances.png"))
    assert not [path.name for path in folder.iterdir() if path.name.startswith(".")]


def test_trial_whose_worker_went_silent_runs_again():
    # a worker on another machine cannot be checked for its process, only for its heartbeat
    study = optuna.create_study(direction="maximize")
    space = {"learning-rate": optuna.distributions.FloatDistribution(1e-4, 1e-2)}
    for heartbeat in (time.time() - sweep.DEAD_AFTER_S - 1, time.time()):
        trial = study.ask(space)
        trial.set_user_attr("worker", "another-machine:12345")
        trial.set_user_attr("heartbeat", heartbeat)
    sweep.retry_dead_trials(study)
    assert [trial.state for trial in study.trials] == [TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING]
    assert study.trials[2].user_attrs["retry of"] == 0


def test_pruner_that_always_prunes_stops_the_run_early(tmp_path):
    total = 20000
    run_sweep(tmp_path, "pruned", "--seeds", "1", "2", "--trials", "1", "--pruner", "threshold:1e9",
              fixed=[*TINY[:-1], str(total)])  # fmt: skip
    (trial,) = load_study(tmp_path, "pruned").trials
    assert trial.state == TrialState.PRUNED
    (run_dir,) = run_dirs(tmp_path, "pruned", 0, 1)
    assert max(step for step, _ in read_scalars(run_dir)["losses/value_loss"]) < total
    assert "stopped at step" in (tmp_path / "sweeps/pruned/logs/trial0_CartPole-v1_seed1.log").read_text()
    assert run_dirs(tmp_path, "pruned", 0, 2) == []  # a pruned trial runs no further seed
    with open(tmp_path / "sweeps/pruned/trials.csv") as file:
        (row,) = csv.DictReader(file)
    assert row["state"] == "PRUNED" and row["note"].startswith("CartPole-v1 seed 1")


# ---------------------------------------------------------------------------------------------
# Bad input: one line, naming the problem, and nothing written


@pytest.mark.parametrize(
    "change, message",
    [
        ({"--space": ["learning-rat=log:1e-5:1e-2"]}, "--learning-rat (in --space); did you mean --learning-rate?"),
        ({"--": ["--total-timestep", "2000"]}, "has no flag --total-timestep (in the flags after --)"),
        ({"--": ["--total-timesteps", "lots"]}, "--total-timesteps lots: expected an integer, got 'lots'"),
        ({"--": ["--seed", "3"]}, "--seed is set for each run by --seeds"),
        ({"--space": ["learning-rate=log:1e-2:1e-5"]}, "learning-rate=log:1e-2:1e-5: the range needs LOW < HIGH"),
        ({"--space": ["update-epochs=1.5:4"]}, "update-epochs=1.5:4: expected an integer, got '1.5'"),
        ({"--space": ["learning-rate=3e-4"]}, "learning-rate=3e-4: give NAME=LOW:HIGH, NAME=log:LOW:HIGH or"),
        ({"--space": ["norm-adv=0:1"]}, "norm-adv=0:1: give NAME=LOW:HIGH"),
        ({"script": ["no_such_script.py"]}, "script no_such_script.py does not exist"),
        ({"--storage": ["sqlite:////no/such/dir/study.db"]}, "cannot open the storage sqlite:////no/such/dir/study.db"),
        ({"--storage": ["study.db"]}, "--storage 'study.db' is not a database URL"),
        ({"--env-ids": ["CartPole-v1", "Acrobot-v1"]}, "with several --env-ids give each a score range"),
    ],
)  # fmt: skip
def test_bad_input_stops_with_one_line_and_writes_nothing(change, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    options = {"script": [str(SCRIPT)], "--study": ["bad"], "--env-ids": ["CartPole-v1"], "--space": SPACE, **change}
    argv = [
        *options.pop("script"),
        *(token for key, values in options.items() if key != "--" for token in [key, *values]),
    ]
    with pytest.raises(SystemExit) as stop:
        sweep.main([*argv, "--", *options.get("--", TINY)])
    assert stop.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1, captured.err
    assert captured.err.startswith("error: ") and message in captured.err, captured.err
    assert not (tmp_path / "sweeps").exists()
