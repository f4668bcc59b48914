"""--track: Weights & Biases mirrors the TensorBoard logs, as CleanRL's flag does. wandb is not a
dependency, so these tests put a stand-in `wandb` module on PYTHONPATH that records its calls."""

import importlib
import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO, interrupting_loss, run_script, single_run_dir, without_module
from test_scripts import assert_one_line_error

FAKE_WANDB = """
import glob, json, os

def _record(entry):
    with open(os.environ["FAKE_WANDB_CALLS"], "a") as calls:
        calls.write(json.dumps(entry, default=str) + "\\n")

class _Run:
    def save(self, glob_str, base_path=None, policy="live"):
        _record({"save": [glob_str, base_path, policy], "matched": sorted(glob.glob(glob_str))})

    def finish(self, exit_code=None):
        _record({"finish": exit_code})

def init(**kwargs):
    if os.environ.get("FAKE_WANDB_FAIL"):
        raise RuntimeError(os.environ["FAKE_WANDB_FAIL"])
    _record({"init": kwargs, "event_files_before": glob.glob("runs/*/events.out.tfevents.*")})
    return _Run()
"""


def fake_wandb_env(tmp_path, **extra):
    module_dir = tmp_path / "fake_modules"
    module_dir.mkdir(exist_ok=True)
    (module_dir / "wandb.py").write_text(FAKE_WANDB)
    return {"PYTHONPATH": str(module_dir), "FAKE_WANDB_CALLS": str(tmp_path / "calls.jsonl"), **extra}


def recorded_calls(tmp_path):
    return [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]


def test_track_starts_one_wandb_run_that_mirrors_tensorboard_and_resume_continues_it(tiny_discrete, tmp_path):
    env = fake_wandb_env(tmp_path)
    flags = [
        "--track",
        "--wandb-project-name",
        "my-project",
        "--wandb-entity",
        "my-team",
        "--save-model",
        "--exp-name",
        "lr3e-4,ent0.01",
    ]  # a comma: fine in a folder name, refused in a W&B id
    result = run_script("ppo_discrete.py", *tiny_discrete, *flags, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    run_dir = single_run_dir(tmp_path)
    init, finish = recorded_calls(tmp_path)
    assert init["init"]["project"] == "my-project" and init["init"]["entity"] == "my-team"
    assert init["init"]["sync_tensorboard"] is True
    # wandb mirrors only a SummaryWriter made after wandb.init
    assert init["event_files_before"] == [] and list(run_dir.glob("events.out.tfevents.*"))
    assert init["init"]["name"] == run_dir.name and init["init"]["id"] == run_dir.name.replace(",", "-")
    assert init["init"]["config"]["env_id"] == "CartPole-v1" and init["init"]["config"]["num_steps"] == 32
    assert finish == {"finish": 0}

    # as if the run had been stopped halfway: the same checkpoint, of a run of twice as many steps
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    checkpoint["args"]["total_timesteps"] *= 2
    torch.save(checkpoint, run_dir / "checkpoint.pt")
    resumed = run_script(
        "ppo_discrete.py", "--resume", str(run_dir / "checkpoint.pt"), "--track", cwd=tmp_path, env=env
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    resumed_init = recorded_calls(tmp_path)[2]["init"]  # the same W&B run: same id, project and entity
    assert resumed_init["id"] == init["init"]["id"] and resumed_init["resume"] == "allow"
    assert resumed_init["project"] == "my-project" and resumed_init["entity"] == "my-team"


def test_stopped_tracked_run_says_so_and_hints_a_tracked_resume(tmp_path, monkeypatch, capsys):
    """Ctrl-C: W&B gets exit code 130, and the resume command keeps tracking."""
    module = importlib.import_module("ppo_discrete")
    for name, value in fake_wandb_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    monkeypatch.syspath_prepend(str(tmp_path / "fake_modules"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(module, "ppo_loss", interrupting_loss(module.ppo_loss, at_call=3))
    summary = module.train(module.Args(env_id="CartPole-v1", num_envs=2, num_steps=32, num_minibatches=2,
                                       update_epochs=2, total_timesteps=1024, checkpoint_every=1, cuda=False,
                                       track=True))  # fmt: skip
    assert summary["interrupted"]
    assert capsys.readouterr().out.strip().splitlines()[-1].endswith("checkpoint.pt --track")
    assert recorded_calls(tmp_path)[-1] == {"finish": 130}


def test_crashed_tracked_run_is_not_reported_finished(tiny_discrete, tmp_path):
    """An exception in training (here the env fails at its 40th step) ends the W&B run with exit code 1, not 0."""
    code = (
        "import runpy, sys, gymnasium as gym\n"
        "real_step, calls = gym.vector.SyncVectorEnv.step, []\n"
        "def failing_step(self, actions):\n"
        "    calls.append(1)\n"
        "    if len(calls) == 40:\n"
        "        raise RuntimeError('the simulator failed')\n"
        "    return real_step(self, actions)\n"
        "gym.vector.SyncVectorEnv.step = failing_step\n"
        f"sys.argv = ['ppo_discrete.py', *{tiny_discrete!r}, '--track']\n"
        f"runpy.run_path({str(REPO / 'ppo_discrete.py')!r}, run_name='__main__')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={**os.environ, **fake_wandb_env(tmp_path)})  # fmt: skip
    assert result.returncode == 1 and "the simulator failed" in result.stderr
    assert recorded_calls(tmp_path)[-1] == {"finish": 1}


def test_track_with_capture_video_saves_every_video_in_the_wandb_run(tiny_discrete, tmp_path):
    """wandb's monitor_gym breaks on gymnasium 1.x's RecordVideo, so the videos go up as files at the end,
    after the envs are closed and the last video is written."""
    env = fake_wandb_env(tmp_path)
    result = run_script("ppo_discrete.py", *tiny_discrete, "--track", "--capture-video", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    videos = sorted(str(path.relative_to(tmp_path)) for path in (tmp_path / "videos").rglob("*.mp4"))
    init, save, finish = recorded_calls(tmp_path)
    assert "monitor_gym" not in init["init"]
    assert len(videos) >= 2 and save["matched"] == videos  # every video written
    assert save["save"][1:] == ["videos", "now"] and finish == {"finish": 0}


def test_no_track_never_imports_wandb(tiny_discrete, tmp_path):
    env = fake_wandb_env(tmp_path)
    (tmp_path / "fake_modules" / "wandb.py").write_text("raise RuntimeError('wandb imported without --track')\n")
    result = run_script("ppo_discrete.py", *tiny_discrete, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("script", ["ppo_continuous.py", "ppo_discrete.py"])
def test_track_without_wandb_gives_one_line_error(script, tmp_path):
    result = run_script(script, "--track", cwd=tmp_path, env=without_module(tmp_path, "wandb"), timeout=120)
    assert_one_line_error(result, "--track needs wandb: `pip install wandb`", tmp_path)


def test_eval_checkpoint_with_track_gives_one_line_error(tmp_path):
    result = run_script("ppo_discrete.py", "--eval-checkpoint", "a.pt", "--track", cwd=tmp_path, timeout=120)
    assert_one_line_error(result, "--eval-checkpoint prints its result and logs nothing; drop --track", tmp_path)


def test_wandb_that_cannot_start_gives_one_line_error(tiny_discrete, tmp_path):
    reason = "api_key not configured (no-tty). call wandb.login(key=[your_api_key])"
    env = fake_wandb_env(tmp_path, FAKE_WANDB_FAIL=f"{reason}\nsecond line of the error")
    result = run_script("ppo_discrete.py", *tiny_discrete, "--track", cwd=tmp_path, env=env)
    assert_one_line_error(result, f"--track: wandb could not start ({reason}); run `wandb login`", tmp_path)
