"""--track: Weights & Biases mirrors the TensorBoard logs, as CleanRL's flag does. wandb is not a
dependency, so these tests put a stand-in `wandb` module on PYTHONPATH that records its calls."""

import json

import pytest
import torch
from conftest import run_script, single_run_dir
from test_scripts import assert_one_line_error

FAKE_WANDB = '''
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
'''


def fake_wandb_env(tmp_path, **extra):
    module_dir = tmp_path / "fake_modules"
    module_dir.mkdir(exist_ok=True)
    (module_dir / "wandb.py").write_text(FAKE_WANDB)
    return {"PYTHONPATH": str(module_dir), "FAKE_WANDB_CALLS": str(tmp_path / "calls.jsonl"), **extra}


def recorded_calls(tmp_path):
    return [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]


def test_track_starts_one_wandb_run_that_mirrors_tensorboard_and_resume_continues_it(tiny_discrete, tmp_path):
    env = fake_wandb_env(tmp_path)
    flags = ["--track", "--wandb-project-name", "my-project", "--wandb-entity", "my-team", "--save-model"]
    result = run_script("ppo_discrete.py", *tiny_discrete, *flags, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    run_dir = single_run_dir(tmp_path)
    init, finish = recorded_calls(tmp_path)
    assert init["init"]["project"] == "my-project" and init["init"]["entity"] == "my-team"
    assert init["init"]["sync_tensorboard"] is True
    # wandb mirrors only a SummaryWriter made after wandb.init
    assert init["event_files_before"] == [] and list(run_dir.glob("events.out.tfevents.*"))
    assert init["init"]["name"] == init["init"]["id"] == run_dir.name
    assert init["init"]["config"]["env_id"] == "CartPole-v1" and init["init"]["config"]["num_steps"] == 32
    assert finish == {"finish": 0}

    # as if the run had been stopped halfway: the same checkpoint, of a run of twice as many steps
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    checkpoint["args"]["total_timesteps"] *= 2
    torch.save(checkpoint, run_dir / "checkpoint.pt")
    resumed = run_script("ppo_discrete.py", "--resume", str(run_dir / "checkpoint.pt"), "--track", cwd=tmp_path, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    resumed_init = recorded_calls(tmp_path)[2]["init"]
    assert resumed_init["id"] == run_dir.name and resumed_init["resume"] == "allow"


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
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "wandb.py").write_text("raise ImportError('No module named wandb')\n")
    result = run_script(script, "--track", cwd=tmp_path, env={"PYTHONPATH": str(blocker)}, timeout=120)
    assert_one_line_error(result, "--track logs to Weights & Biases, which needs wandb: `pip install wandb`", tmp_path)


def test_wandb_that_cannot_start_gives_one_line_error(tiny_discrete, tmp_path):
    reason = "api_key not configured (no-tty). call wandb.login(key=[your_api_key])"
    env = fake_wandb_env(tmp_path, FAKE_WANDB_FAIL=f"{reason}\nsecond line of the error")
    result = run_script("ppo_discrete.py", *tiny_discrete, "--track", cwd=tmp_path, env=env)
    assert_one_line_error(result, f"--track: wandb could not start ({reason}); log in with `wandb login`", tmp_path)
