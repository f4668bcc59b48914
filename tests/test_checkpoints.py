"""Checkpoints, resume, evaluation and fine-tuning, in both scripts."""

import copy
import importlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import REPO, interrupting_loss, read_scalars, run_script, single_run_dir

# module: (env for most tests, an env with other spaces)
SETUPS = {
    "ppo_continuous": ("InvertedPendulum-v4", "HalfCheetah-v4"),
    "ppo_discrete": ("CartPole-v1", "Acrobot-v1"),
}
MODULES = list(SETUPS)


def tiny_args(module, **overrides):
    """Two iterations of 64 steps on two envs: seconds, not minutes."""
    values = dict(env_id=SETUPS[module.__name__][0], num_envs=2, num_steps=32, num_minibatches=2,
                  update_epochs=2, total_timesteps=128, cuda=False)  # fmt: skip
    if module.__name__ == "ppo_discrete":
        values.update(norm_obs=True, norm_reward=True)  # so the discrete checkpoint holds statistics too
    values.update(overrides)
    return module.Args(**values)


@pytest.fixture(params=MODULES)
def module(request):
    return importlib.import_module(request.param)


@pytest.fixture
def trained(module, tmp_path, monkeypatch):
    """A finished tiny run with --save-model; returns (summary, checkpoint path)."""
    monkeypatch.chdir(tmp_path)
    summary = module.train(tiny_args(module, save_model=True))
    return summary, tmp_path / "runs" / summary["run_name"] / "checkpoint.pt"


def eval_envs_with(module, args, normalization, num_envs=3):
    envs = module.make_envs(replace(args, eval_episodes=num_envs), evaluation=True)
    module.set_normalization(envs, normalization, freeze=True)
    return envs


def saved_args(module, checkpoint):
    """The flags a checkpoint's run was trained with."""
    return module.Args(**{k: v for k, v in checkpoint["args"].items() if k in module.Args.__dataclass_fields__})


def test_checkpoint_round_trip_gives_identical_actions_for_identical_raw_observations(module, trained):
    summary, path = trained
    checkpoint = module.load_checkpoint(str(path))
    args = saved_args(module, checkpoint)
    loaded = module.load_agent(checkpoint)

    # the raw observation -> normalize by hand with each set of statistics -> deterministic action
    raw = np.random.default_rng(0).normal(size=(64, checkpoint["observation_shape"][0])) * 3
    actions = []
    for agent, stats in ((summary["agent"], summary["normalization"]), (loaded, checkpoint["normalization"])):
        obs_rms = stats["obs_rms"]
        normalized = np.clip((raw - obs_rms["mean"].numpy()) / np.sqrt(obs_rms["var"].numpy() + 1e-8), -10, 10)
        with torch.no_grad():
            actions.append(agent.get_action_and_value(torch.as_tensor(normalized).float(), deterministic=True)[0])
    torch.testing.assert_close(actions[0], actions[1], rtol=0, atol=0)
    assert summary["normalization"]["obs_rms"]["count"] > 100  # statistics were learned, not defaults

    # and through the real wrappers: the same seeded episodes give the same returns
    returns = [
        module.evaluate(agent, eval_envs_with(module, args, stats), True, seed=5, device="cpu")
        for agent, stats in ((summary["agent"], summary["normalization"]), (loaded, checkpoint["normalization"]))
    ]
    np.testing.assert_array_equal(returns[0], returns[1])


def test_evaluation_leaves_frozen_statistics_unchanged(module, trained):
    summary, _ = trained
    args = tiny_args(module)
    before = copy.deepcopy(summary["normalization"])
    envs = eval_envs_with(module, args, summary["normalization"])
    returns = module.evaluate(summary["agent"], envs, True, seed=3, device="cpu")
    assert len(returns) == 3 and np.all(np.isfinite(returns))
    after = module.get_normalization(envs)
    for key in before:
        assert after[key]["count"] == before[key]["count"]
        torch.testing.assert_close(after[key]["mean"], before[key]["mean"], rtol=0, atol=0)
        torch.testing.assert_close(after[key]["var"], before[key]["var"], rtol=0, atol=0)
    # the same frozen envs, unfrozen, would have moved: the check above is not vacuous
    module.set_normalization(envs, before)
    for wrapper in module.normalizers(envs).values():
        wrapper.update_running_mean = True
    module.evaluate(summary["agent"], envs, True, seed=3, device="cpu")
    assert module.get_normalization(envs)["obs_rms"]["count"] > before["obs_rms"]["count"]


def test_resume_continues_global_step_and_learning_rate(module, tmp_path, monkeypatch):
    args = dict(total_timesteps=4 * 64, checkpoint_every=1)
    (tmp_path / "full").mkdir(), (tmp_path / "split").mkdir()
    monkeypatch.chdir(tmp_path / "full")
    full = module.train(tiny_args(module, **args))
    full_scalars = read_scalars(tmp_path / "full" / "runs" / full["run_name"])

    monkeypatch.chdir(tmp_path / "split")
    per_update = 2 * 2  # epochs x minibatches
    with monkeypatch.context() as patch:
        patch.setattr(module, "ppo_loss", interrupting_loss(module.ppo_loss, per_update + 1))  # in iteration 2
        first = module.train(tiny_args(module, **args))
    assert first["interrupted"] and first["global_step"] == 2 * 64
    path = f"runs/{first['run_name']}/checkpoint.pt"
    saved = module.load_checkpoint(path)
    assert (saved["global_step"], saved["iteration"]) == (128, 2)

    resumed = module.train(tiny_args(module, resume=path, cuda=False))
    assert resumed["run_name"] == first["run_name"] and resumed["global_step"] == 4 * 64
    scalars = read_scalars(tmp_path / "split" / "runs" / first["run_name"])
    # one point per iteration at the right global steps, and the same annealed learning rates
    assert [step for step, _ in scalars["charts/learning_rate"]] == [64, 128, 192, 256]
    assert scalars["charts/learning_rate"] == full_scalars["charts/learning_rate"]
    # and that schedule is the linear one by hand: the initial rate x (1 - (iteration - 1) / 4)
    initial = module.Args().learning_rate  # 3e-4 continuous, 2.5e-4 discrete (CleanRL's)
    expected = [initial, initial * 3 / 4, initial / 2, initial / 4]
    assert [value for _, value in scalars["charts/learning_rate"]] == pytest.approx(expected, rel=1e-6)
    assert module.load_checkpoint(path)["global_step"] == 256


def test_resume_restores_weights_optimizer_and_normalization(module, tmp_path, monkeypatch):
    """A run stopped in its second iteration, resumed: before its third iteration it holds exactly the saved state."""
    monkeypatch.chdir(tmp_path)
    with monkeypatch.context() as patch:
        patch.setattr(module, "ppo_loss", interrupting_loss(module.ppo_loss, 2 * 2 + 1))  # in iteration 2
        first = module.train(tiny_args(module, total_timesteps=3 * 64))
    path = f"runs/{first['run_name']}/checkpoint.pt"
    checkpoint, restored, real_start = module.load_checkpoint(path), {}, module.Run.start

    def start_and_look(run, envs, agent, optimizer):  # the state that the resumed run starts training from
        result = real_start(run, envs, agent, optimizer)
        restored.update(agent=copy.deepcopy(agent.state_dict()), optimizer=copy.deepcopy(optimizer.state_dict()),
                        normalization=module.get_normalization(envs))  # fmt: skip
        return result

    monkeypatch.setattr(module.Run, "start", start_and_look)
    resumed = module.train(tiny_args(module, resume=path))
    assert resumed["global_step"] == 3 * 64
    for name, tensor in checkpoint["agent"].items():
        torch.testing.assert_close(restored["agent"][name], tensor, rtol=0, atol=0)
    for key, stats in checkpoint["normalization"].items():
        assert restored["normalization"][key]["count"] == stats["count"]
        torch.testing.assert_close(restored["normalization"][key]["mean"], stats["mean"], rtol=0, atol=0)
    saved_optimizer, optimizer = checkpoint["optimizer"], restored["optimizer"]
    assert saved_optimizer["state"], "the optimizer's moments are saved"
    assert optimizer["param_groups"][0]["eps"] == saved_optimizer["param_groups"][0]["eps"]
    for index, moments in saved_optimizer["state"].items():
        for name, tensor in moments.items():
            torch.testing.assert_close(optimizer["state"][index][name], tensor, rtol=0, atol=0)


@pytest.mark.parametrize(("async_envs", "sig"), [(False, signal.SIGINT), (True, signal.SIGINT), (True, signal.SIGTERM)],
                         ids=["sync-envs", "async-envs", "async-envs-sigterm"])  # fmt: skip
def test_sigint_leaves_a_checkpoint_that_loads_and_resumes(module, tmp_path, async_envs, sig):
    """With --async-envs the signal goes to the whole process group, env workers included, as a
    terminal's Ctrl-C does, or a cluster's SIGTERM when it preempts a job: the workers must leave
    it to the trainer (killed, they would fail the iteration, or its closing)."""
    script = f"{module.__name__}.py"
    env_id, total = SETUPS[module.__name__][0], 64 * 100  # the signal comes in the first few of 100 iterations
    flags = [
        "--env-id",
        env_id,
        "--num-envs",
        "2",
        "--num-steps",
        "32",
        "--num-minibatches",
        "2",
        "--update-epochs",
        "2",
        "--total-timesteps",
        str(total),
        "--checkpoint-every",
        "1",
        "--no-cuda",
        *(["--async-envs"] if async_envs else []),
    ]
    process = subprocess.Popen(
        [sys.executable, str(REPO / script), *flags], cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"}, start_new_session=True,
    )  # fmt: skip
    deadline = time.time() + 120
    while not list((tmp_path / "runs").glob("*/checkpoint.pt")) and time.time() < deadline:
        time.sleep(0.05)
    if async_envs:
        os.killpg(process.pid, sig)  # the process group: trainer and env workers
    else:
        process.send_signal(sig)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "env worker had already stopped" not in stderr  # the workers lived to be closed
    run_dir = single_run_dir(tmp_path)
    path = run_dir / "checkpoint.pt"
    assert f"--resume {path.relative_to(tmp_path)}" in stdout
    hinted_script = stdout.split("resume with: python ")[1].split(" --resume")[0]
    assert (tmp_path / hinted_script).resolve() == REPO / script  # the command runs from here as printed
    checkpoint = module.load_checkpoint(str(path))
    assert 0 < checkpoint["global_step"] < total  # stopped early, at an iteration boundary
    # TensorBoard was flushed up to the checkpoint
    assert read_scalars(run_dir)["charts/learning_rate"][-1][0] == checkpoint["global_step"]

    result = run_script(script, "--resume", str(path.relative_to(tmp_path)), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"resuming {run_dir.name} at step {checkpoint['global_step']:,}" in result.stdout
    assert module.load_checkpoint(str(path))["global_step"] == total
    steps = [step for step, _ in read_scalars(run_dir)["charts/learning_rate"]]
    assert steps == list(range(64, total + 1, 64))  # one run, each iteration once


def test_failed_write_leaves_previous_checkpoint_loadable_and_no_partial_file(module, trained, monkeypatch):
    """A write that fails midway (a full disk, or a crash) stops with a one-line error; the checkpoint
    written before is intact and the partial temporary file is gone."""
    summary, path = trained
    before = module.load_checkpoint(str(path))
    args = saved_args(module, before)
    envs = module.make_envs(args)
    agent = summary["agent"]
    with torch.no_grad():
        for parameter in agent.parameters():
            parameter.add_(1.0)  # a newer state that must not half-replace the old one
    optimizer = torch.optim.Adam(agent.parameters())
    real_save = torch.save

    def save_half_then_die(obj, f):
        real_save(obj, f)
        f.seek(0)
        f.truncate(100)  # as if the process died mid-write
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", save_half_then_die)
    with pytest.raises(
        SystemExit,
        match=f"error: cannot write {path} .No space left on device.; the file there before, if any, is intact",
    ):
        module.save_checkpoint(str(path), agent, optimizer, envs, args, "x", 999, 9, None)
    monkeypatch.setattr(torch, "save", real_save)
    assert not os.path.exists(f"{path}.tmp")
    after = module.load_checkpoint(str(path))
    assert after["global_step"] == before["global_step"]
    for name, tensor in before["agent"].items():
        torch.testing.assert_close(after["agent"][name], tensor, rtol=0, atol=0)


def test_a_full_disk_stops_with_one_line_and_leaves_no_partial_file(module, trained):
    """A real ENOSPC through torch.save: the temporary file is a link to /dev/full, where every write fails."""
    summary, path = trained
    before = module.load_checkpoint(str(path))
    args = saved_args(module, before)
    os.symlink("/dev/full", f"{path}.tmp")
    with pytest.raises(SystemExit, match="cannot write .*No space left on device"):
        module.save_checkpoint(str(path), summary["agent"], torch.optim.Adam(summary["agent"].parameters()),
                               module.make_envs(args), args, "x", 999, 9, None)  # fmt: skip
    assert not os.path.lexists(f"{path}.tmp")
    assert module.load_checkpoint(str(path))["global_step"] == before["global_step"]


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_that_would_run_code_is_refused(module, tmp_path):
    marker = tmp_path / "code_ran"
    evil = tmp_path / "evil.pt"
    torch.save({"script": module.__name__, "agent": {}, "payload": RunsCode(marker)}, evil)
    with pytest.raises(SystemExit, match="refused"):
        module.load_checkpoint(str(evil))
    result = run_script(f"{module.__name__}.py", "--eval-checkpoint", str(evil), cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "refused" in result.stderr
    assert not marker.exists()


def one_line_error(result, *messages):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and all(message in errors[0] for message in messages), result.stderr


@pytest.mark.parametrize("flag", ["--eval-checkpoint", "--resume", "--init-from"])
def test_checkpoint_errors_are_one_line(module, trained, tmp_path, flag):
    script = f"{module.__name__}.py"
    _, path = trained
    # checked first, before the envs: NoSuchEnv-v0 would be an error of its own
    one_line_error(run_script(script, flag, "missing.pt", "--env-id", "NoSuchEnv-v0", cwd=tmp_path), "does not exist")
    one_line_error(
        run_script(script, flag, str(path.parent), cwd=tmp_path), "is a directory; pass a checkpoint file in it"
    )
    (tmp_path / "garbage.pt").write_bytes(os.urandom(2000))
    one_line_error(run_script(script, flag, "garbage.pt", cwd=tmp_path), "corrupt")
    (tmp_path / "truncated.pt").write_bytes(path.read_bytes()[:5000])
    one_line_error(run_script(script, flag, "truncated.pt", cwd=tmp_path), "corrupt")
    other_script = "ppo_discrete.py" if module.__name__ == "ppo_continuous" else "ppo_continuous.py"
    one_line_error(run_script(other_script, flag, str(path), cwd=tmp_path), f"written by {script}")


def test_incomplete_checkpoint_is_refused(module, trained, tmp_path):
    """One load_checkpoint serves --resume, --init-from and --eval-checkpoint: one of them checks it."""
    _, path = trained
    incomplete = torch.load(path, weights_only=True)
    del incomplete["normalization"], incomplete["iteration"]  # as a checkpoint of another version might be
    torch.save(incomplete, tmp_path / "incomplete.pt")
    result = run_script(f"{module.__name__}.py", "--resume", "incomplete.pt", cwd=tmp_path)
    one_line_error(result, "lacks iteration, normalization")


def test_checkpoint_for_other_spaces_is_refused(module, trained, tmp_path):
    _, path = trained
    other_env = SETUPS[module.__name__][1]
    result = run_script(f"{module.__name__}.py", "--init-from", str(path), "--env-id", other_env, cwd=tmp_path)
    one_line_error(result, "use an env with those")


def test_init_from_starts_a_new_run_from_saved_weights_and_statistics(tmp_path, monkeypatch, capsys):
    """Fine-tuning on another env with the same spaces: HalfCheetah-v4 -> Walker2d-v4."""
    module = importlib.import_module("ppo_continuous")
    monkeypatch.chdir(tmp_path)
    source = module.train(tiny_args(module, env_id="HalfCheetah-v4", save_model=True))
    path = f"runs/{source['run_name']}/checkpoint.pt"
    time.sleep(1.1)  # a new run name (it has a one-second timestamp)
    capsys.readouterr()
    # learning rate 0: the weights stay as loaded, so they can be compared
    tuned = module.train(tiny_args(module, env_id="Walker2d-v4", init_from=path, learning_rate=0.0, total_timesteps=64))
    started = f"starting from the weights and normalization statistics of {source['run_name']} at step 128"
    assert started in capsys.readouterr().out
    assert tuned["run_name"] != source["run_name"] and tuned["run_name"].startswith("Walker2d-v4")
    assert tuned["global_step"] == 64  # a new run counts from zero
    for name, tensor in tuned["agent"].state_dict().items():
        torch.testing.assert_close(tensor, source["agent"].state_dict()[name], rtol=0, atol=0)
    # the normalizer continued from the saved statistics: 1 reset + 32 steps of 2 envs more
    assert tuned["normalization"]["obs_rms"]["count"] == pytest.approx(source["normalization"]["obs_rms"]["count"] + 66)


def test_periodic_evaluation_logs_and_keeps_the_best_checkpoint(module, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    summary = module.train(tiny_args(module, total_timesteps=3 * 64, eval_every=1, eval_episodes=2, seed=7))
    scalars = read_scalars(tmp_path / "runs" / summary["run_name"])
    means = [value for _, value in scalars["eval/episodic_return"]]
    assert [step for step, _ in scalars["eval/episodic_return"]] == [64, 128, 192]
    assert len(scalars["eval/episodic_return_std"]) == 3
    best_path = f"runs/{summary['run_name']}/best.pt"
    best = module.load_checkpoint(best_path)
    assert best["best_eval_return"] == pytest.approx(max(means))
    assert best["global_step"] == 64 * (1 + int(np.argmax(means)))
    # --eval-checkpoint with the run's --seed plays the same episodes: best.pt's return, reproduced
    returns = module.evaluate_checkpoint(module.Args(eval_checkpoint=best_path, eval_episodes=2, seed=7, cuda=False))
    assert returns.mean() == pytest.approx(best["best_eval_return"], rel=1e-6)


def endless_env(module, limited: bool = False) -> str:
    """tests/my_envs.py's env whose episodes never end by themselves (reward 1 per step), for this script's actions"""
    return f"my_envs:Endless{'Box' if module.__name__ == 'ppo_continuous' else ''}{'Limited' if limited else ''}-v0"


def fail_after(seconds: int):
    """Turn a hang into a failure: SIGALRM raises in the main thread after `seconds`."""

    def stalled(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    signal.signal(signal.SIGALRM, stalled)
    signal.alarm(seconds)


def test_evaluation_cuts_the_episodes_of_an_env_without_a_time_limit(module, tmp_path, monkeypatch, capsys):
    """Before the cap, the first evaluation of such an env never returned and the run stalled."""
    importlib.import_module("my_envs")
    monkeypatch.chdir(tmp_path)
    fail_after(120)
    try:
        summary = module.train(tiny_args(module, env_id=endless_env(module), eval_every=1, eval_episodes=2,
                                         eval_max_episode_steps=25, save_model=True))  # fmt: skip
        checkpoint = f"runs/{summary['run_name']}/checkpoint.pt"
        returns = module.evaluate_checkpoint(module.Args(eval_checkpoint=checkpoint, eval_episodes=3, async_envs=True,
                                                         eval_max_episode_steps=7, cuda=False))  # fmt: skip
    finally:
        signal.alarm(0)
    scalars = read_scalars(tmp_path / "runs" / summary["run_name"])
    assert scalars["eval/episodic_return"] == [(64, 25.0), (128, 25.0)]  # 25 steps of reward 1
    assert "charts/episodic_return" not in scalars  # training itself never cuts an episode
    np.testing.assert_array_equal(returns, [7.0, 7.0, 7.0])  # --eval-checkpoint's own cap, in worker processes too
    out = capsys.readouterr().out
    assert f"notice: {endless_env(module)} has no time limit; evaluation cuts episodes at 25 steps" in out
    assert "return(last 20) n/a  eval 25.0  time left" in out  # the progress line shows the latest evaluation


def test_evaluation_keeps_the_time_limit_an_env_has(module, tmp_path, monkeypatch):
    importlib.import_module("my_envs")
    monkeypatch.chdir(tmp_path)
    summary = module.train(tiny_args(module, env_id=endless_env(module, limited=True), eval_every=2, eval_episodes=2,
                                     eval_max_episode_steps=5, save_model=True))  # fmt: skip
    scalars = read_scalars(tmp_path / "runs" / summary["run_name"])
    assert scalars["eval/episodic_return"] == [(128, 30.0)]  # registered with max_episode_steps=30
    checkpoint = f"runs/{summary['run_name']}/checkpoint.pt"
    returns = module.evaluate_checkpoint(module.Args(eval_checkpoint=checkpoint, eval_episodes=2,
                                                     eval_max_episode_steps=5, cuda=False))  # fmt: skip
    np.testing.assert_array_equal(returns, [30.0, 30.0])


def test_eval_checkpoint_names_the_training_flags_it_ignores(module, trained, capsys):
    """--eval-checkpoint plays the run's own env and flags: an --env-id given with it is not used, and says so."""
    _, path = trained
    other_env = {"ppo_continuous": "Walker2d-v4", "ppo_discrete": "Acrobot-v1"}[module.__name__]  # not the default
    module.evaluate_checkpoint(
        module.Args(
            eval_checkpoint=str(path),
            eval_episodes=1,
            compile=True,
            env_id=other_env,
            env_kwargs=("a=1", "b=2"),
            learning_rate=0.5,
            seed=3,
            cuda=False,
        )
    )
    out = capsys.readouterr().out
    # its own flags (--seed, --eval-episodes) are not named; --compile plays no part in evaluation
    assert f"ignoring --compile True, --env-id {other_env}, --env-kwargs a=1 b=2, --learning-rate 0.5\n" in out
    assert f"{SETUPS[module.__name__][0]}: return " in out  # evaluated on the run's env


def test_standalone_evaluation_prints_mean_and_std_and_trains_nothing(module, trained, tmp_path):
    _, path = trained
    workdir = tmp_path / "eval"
    workdir.mkdir()
    result = run_script(
        f"{module.__name__}.py",
        "--eval-checkpoint",
        str(path),
        "--eval-episodes",
        "3",
        "--capture-video",
        "--num-minibatches",
        "3",
        cwd=workdir,
    )  # a training flag: not used, not checked
    assert result.returncode == 0, result.stderr
    assert "± " in result.stdout and "over 3 episodes (deterministic" in result.stdout
    assert not (workdir / "runs").exists()  # nothing trained, nothing logged
    videos = list((workdir / "videos").rglob("*.mp4"))
    assert len(videos) == 1 and videos[0].parent.name.endswith("-eval")


def test_fine_tuned_run_resumes_in_its_run_directory_from_anywhere(module, trained, tmp_path, monkeypatch):
    _, source = trained
    (tmp_path / "tune").mkdir(), (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "tune")
    with monkeypatch.context() as patch:
        patch.setattr(module, "ppo_loss", interrupting_loss(module.ppo_loss, 2 * 2 + 1))  # stop after iteration 2
        first = module.train(tiny_args(module, init_from=str(source), total_timesteps=4 * 64, checkpoint_every=1))
    path = tmp_path / "tune" / "runs" / first["run_name"] / "checkpoint.pt"
    assert first["interrupted"] and module.load_checkpoint(str(path))["global_step"] == 128

    monkeypatch.chdir(tmp_path / "elsewhere")  # the --init-from flag is saved, but must not block resuming
    resumed = module.train(tiny_args(module, resume=str(path)))
    assert resumed["global_step"] == 256 and not resumed["interrupted"]
    assert module.load_checkpoint(str(path))["global_step"] == 256  # the original run directory went on
    assert not (tmp_path / "elsewhere" / "runs").exists()


def test_resuming_one_checkpoint_twice_gives_the_same_run(module, tmp_path, monkeypatch):
    """A resumed run reseeds from --seed and its step (simulators' states cannot be saved, so its episodes start anew
    anyway): resumed twice from one checkpoint, it logs the same losses and returns."""
    monkeypatch.chdir(tmp_path)
    with monkeypatch.context() as patch:
        patch.setattr(module, "ppo_loss", interrupting_loss(module.ppo_loss, 2 * 2 + 1))  # in iteration 2
        first = module.train(tiny_args(module, total_timesteps=4 * 64))
    runs = []
    for copy_name in ("a", "b"):
        shutil.copytree(f"runs/{first['run_name']}", copy_name)
        module.train(tiny_args(module, resume=f"{copy_name}/checkpoint.pt"))
        runs.append(read_scalars(tmp_path / copy_name))
    assert [step for step, _ in runs[0]["losses/value_loss"]] == [64, 128, 192, 256]
    for tag in ("losses/value_loss", "losses/policy_loss", "charts/episodic_return"):
        assert runs[0][tag] == runs[1][tag], tag


def test_resume_names_the_flags_it_ignores(module, trained, capsys):
    """--resume takes the run's flags from the checkpoint: one given to change the run is named, not dropped."""
    _, path = trained
    capsys.readouterr()
    module.train(tiny_args(module, resume=str(path), learning_rate=0.5, total_timesteps=4096))
    notices = [line for line in capsys.readouterr().out.splitlines() if "ignoring" in line]
    assert len(notices) == 1 and "--total-timesteps 4096, --learning-rate 0.5" in notices[0], notices
    module.train(tiny_args(module, resume=str(path), torch_threads=2))  # the run's own flags, and runtime ones
    assert "ignoring" not in capsys.readouterr().out
    # flags that are ignored are not checked either: 64 steps do not divide into 3 minibatches
    module.train(tiny_args(module, resume=str(path), num_minibatches=3))
    assert "ignoring --num-minibatches 3" in capsys.readouterr().out


def test_resuming_a_finished_run_changes_nothing(module, trained, tmp_path, capsys):
    summary, path = trained
    files = {file: file.read_bytes() for file in path.parent.iterdir()}
    capsys.readouterr()
    resumed = module.train(tiny_args(module, resume=str(path), capture_video=True))
    out = capsys.readouterr().out
    assert "already finished its 128 steps; nothing to resume" in out and "logs in" not in out
    assert resumed["global_step"] == summary["global_step"] and not resumed["interrupted"]
    assert {file: file.read_bytes() for file in path.parent.iterdir()} == files  # no new log file, same checkpoint
    assert not (tmp_path / "videos").exists()


def test_resume_from_best_is_refused_rather_than_rewinding(module, trained, tmp_path):
    """best.pt (or any copy) sits at an earlier step: resuming from it would overwrite the run's checkpoint.pt."""
    _, path = trained
    best = path.parent / "best.pt"
    best.write_bytes(path.read_bytes())
    latest = path.read_bytes()
    result = run_script(f"{module.__name__}.py", "--resume", str(best), cwd=tmp_path)
    one_line_error(result, f"--resume {best} would rewind its run", "--init-from")
    assert path.read_bytes() == latest
    # a run with --eval-every alone keeps best.pt and no checkpoint.pt: resuming would still drop its later logs
    path.unlink()
    unfinished = torch.load(best, weights_only=True)
    unfinished["args"]["total_timesteps"] *= 2  # so that resuming it would train, and log
    torch.save(unfinished, best)
    logs = {file: file.read_bytes() for file in path.parent.glob("events.out.tfevents.*")}
    result = run_script(f"{module.__name__}.py", "--resume", str(best), cwd=tmp_path)
    one_line_error(result, f"--resume {best} would rewind its run", "--init-from")
    assert "resume from" not in result.stderr  # there is no checkpoint.pt to point at
    assert {file: file.read_bytes() for file in path.parent.glob("events.out.tfevents.*")} == logs
    # a best.pt copied into a folder of its own has no run to rewind: it resumes there
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "best.pt").write_bytes(best.read_bytes())
    result = run_script(f"{module.__name__}.py", "--resume", "mine/best.pt", cwd=tmp_path)
    assert result.returncode == 0 and "resuming" in result.stdout, result.stderr


def test_checkpoint_of_another_network_is_refused(module, trained, tmp_path):
    """E.g. saved by an edited copy of the script with wider layers."""
    _, path = trained
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["agent"]["critic.0.weight"] = torch.zeros(128, checkpoint["agent"]["critic.0.weight"].shape[1])
    checkpoint["args"]["total_timesteps"] *= 2  # so that resuming it trains
    torch.save(checkpoint, tmp_path / "wider.pt")
    for flag in ("--eval-checkpoint", "--resume"):  # (--init-from runs the same check_checkpoint_fits)
        result = run_script(f"{module.__name__}.py", flag, "wider.pt", cwd=tmp_path)
        one_line_error(
            result, "checkpoint wider.pt holds weights of another network", "size mismatch for critic.0.weight"
        )


def test_resume_refuses_another_number_of_ranks(module, trained, tmp_path):
    _, path = trained
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["args"]["batch_size"] *= 2  # as saved by a 2-rank run of the same flags
    torch.save(checkpoint, tmp_path / "two_ranks.pt")
    result = run_script(f"{module.__name__}.py", "--resume", "two_ranks.pt", cwd=tmp_path)
    one_line_error(result, "saved by a run of 2 rank(s)")


def test_a_nan_evaluation_never_becomes_the_best_checkpoint(module, tmp_path, monkeypatch):
    """An evaluation whose mean is nan (an env's nan reward) is no score: were it kept as the best,
    nan compares false with every later mean and best.pt would stay that policy for the whole run."""
    monkeypatch.chdir(tmp_path)
    real_evaluate, calls = module.evaluate, []

    def nan_first(*args, **kwargs):
        returns = real_evaluate(*args, **kwargs)
        calls.append(returns)
        return np.full_like(returns, np.nan) if len(calls) == 1 else returns

    monkeypatch.setattr(module, "evaluate", nan_first)
    summary = module.train(tiny_args(module, total_timesteps=3 * 64, eval_every=1, eval_episodes=2, seed=7))
    assert len(calls) == 3
    best = module.load_checkpoint(f"runs/{summary['run_name']}/best.pt")
    assert np.isfinite(best["best_eval_return"]) and best["global_step"] in (128, 192)


def test_runs_of_one_name_started_in_the_same_second_get_a_folder_each(module, tmp_path, monkeypatch):
    """A run is named env__exp-name__seed__second, so a sweep launched at once (`... --learning-rate 1e-3 &`
    for several rates) starts runs of one name. Each keeps its own folder, logs and checkpoint, the later
    ones with -2, -3: in one shared folder their events would interleave and checkpoint.pt be overwritten."""
    monkeypatch.chdir(tmp_path)
    real_time, start = time.time, time.time()
    second = float(int(start))  # a clock that stays within one second for the whole test, yet moves
    monkeypatch.setattr(module.time, "time", lambda: second + 0.5 + (real_time() - start) * 1e-4)
    rates = (2.5e-4, 1e-3, 3e-3)
    summaries = [
        module.train(tiny_args(module, total_timesteps=64, save_model=True, learning_rate=rate)) for rate in rates
    ]
    names = [summary["run_name"] for summary in summaries]
    assert names[1:] == [names[0] + "-2", names[0] + "-3"]
    for name, rate in zip(names, rates):
        assert len(list((tmp_path / "runs" / name).glob("events.out.tfevents.*"))) == 1
        assert module.load_checkpoint(f"runs/{name}/checkpoint.pt")["args"]["learning_rate"] == rate


@pytest.mark.parametrize("module_name", ["ppo_continuous", "ppo_discrete"])
def test_hidden_sizes_and_activation_build_the_networks(module_name):
    """32-16 ELU on 4 observations, by hand: each MLP has 4x32+32 + 32x16+16 = 688 weights and biases before its
    output layer; the critic's adds 16+1, the actor's 16x2+2 (two logits) or 16+1 (one mean) and one log-std."""
    module = importlib.import_module(module_name)
    discrete = module_name == "ppo_discrete"
    agent = module.Agent(4, [2] if discrete else 1, hidden_sizes=(32, 16), activation="ELU")
    actor = agent.actor if discrete else agent.actor_mean
    assert sum(p.numel() for p in agent.critic.parameters()) == 688 + 17
    assert sum(p.numel() for p in actor.parameters()) == 688 + (34 if discrete else 17)
    assert [type(layer).__name__ for layer in actor] == ["Linear", "ELU", "Linear", "ELU", "Linear"]


def test_a_checkpoint_keeps_its_network_shape(tiny_discrete, tmp_path):
    """Evaluation builds the saved network (its flags are the run's); fine-tuning it with other layers is refused."""
    trained = run_script("ppo_discrete.py", *tiny_discrete, "--hidden-sizes", "32", "16", "--activation", "ELU",
                         cwd=tmp_path)  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    checkpoint = single_run_dir(tmp_path) / "checkpoint.pt"
    evaluated = run_script(
        "ppo_discrete.py", "--eval-checkpoint", str(checkpoint), "--eval-episodes", "2", cwd=tmp_path
    )
    assert evaluated.returncode == 0 and "return" in evaluated.stdout, evaluated.stderr
    refused = run_script("ppo_discrete.py", *tiny_discrete, "--init-from", str(checkpoint), cwd=tmp_path)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        f"error: checkpoint {checkpoint} was trained with hidden_sizes=(32, 16); pass the same setting"
    ]
    tuned = run_script("ppo_discrete.py", *tiny_discrete, "--init-from", str(checkpoint), "--hidden-sizes", "32", "16",
                       "--activation", "ELU", cwd=tmp_path)  # fmt: skip
    assert tuned.returncode == 0, tuned.stderr
