"""Each script end to end, as a user runs it: logs, reproducibility, video and bad input."""

import importlib
import math
import os
import re
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import REPO, read_scalars, run_script, single_run_dir, without_module

COMMON_TAGS = [
    "charts/episodic_return", "charts/episodic_length", "charts/learning_rate", "charts/SPS",
    "losses/value_loss", "losses/policy_loss", "losses/entropy", "losses/old_approx_kl",
    "losses/approx_kl", "losses/clipfrac", "losses/explained_variance", "losses/grad_norm",
]  # fmt: skip
LOSS_TAGS = [tag for tag in COMMON_TAGS if tag.startswith("losses/")]


@pytest.fixture(params=["ppo_continuous.py", "ppo_discrete.py"])
def script_and_flags(request, tiny_continuous, tiny_discrete):
    flags = tiny_continuous if request.param == "ppo_continuous.py" else tiny_discrete
    return request.param, flags


def test_script_runs_and_logs_expected_tags_with_finite_values(script_and_flags, tmp_path):
    script, flags = script_and_flags
    result = run_script(script, *flags, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    scalars = read_scalars(single_run_dir(tmp_path))
    expected = COMMON_TAGS + (["charts/action_std"] if script == "ppo_continuous.py" else [])
    for tag in expected:
        assert tag in scalars, f"{tag} missing; got {sorted(scalars)}"
        assert all(math.isfinite(value) for _, value in scalars[tag]), tag
    # two iterations of 128 steps in all: one loss point per iteration, at the global step
    assert [step for step, _ in scalars["losses/value_loss"]] == [64, 128]
    assert "128/128" in result.stdout  # the console shows progress


def test_same_seed_gives_identical_logged_losses(script_and_flags, tmp_path):
    script, flags = script_and_flags
    runs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        result = run_script(script, *flags, "--seed", "7", cwd=tmp_path / name)
        assert result.returncode == 0, result.stderr
        runs.append(read_scalars(single_run_dir(tmp_path / name)))
    for tag in LOSS_TAGS + ["charts/episodic_return"]:
        assert runs[0][tag] == runs[1][tag], tag
    # and a different seed does give a different run
    (tmp_path / "c").mkdir()
    assert run_script(script, *flags, "--seed", "8", cwd=tmp_path / "c").returncode == 0
    other = read_scalars(single_run_dir(tmp_path / "c"))
    assert other["losses/value_loss"] != runs[0]["losses/value_loss"]


def count_frames(path):
    import imageio_ffmpeg

    frames, _ = imageio_ffmpeg.count_frames_and_secs(str(path))
    return frames


def first_frame(path):
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    width, height = meta["size"]
    frame = np.frombuffer(next(reader), dtype=np.uint8).reshape(height, width, 3)
    reader.close()
    return frame


@pytest.mark.parametrize(
    "script,flags",
    [
        ("ppo_discrete.py", ["--env-id", "CartPole-v1", "--num-envs", "2", "--num-steps", "64",
                             "--num-minibatches", "2", "--update-epochs", "1", "--total-timesteps", "256"]),
        ("ppo_continuous.py", ["--env-id", "Hopper-v4", "--num-steps", "128", "--num-minibatches", "2",
                               "--update-epochs", "1", "--total-timesteps", "256"]),
    ],
)  # fmt: skip
def test_capture_video_writes_playable_mp4_showing_the_agent(script, flags, tmp_path):
    # headless, and without the runtime folder SDL looks for: its complaint looked like one of our errors
    result = run_script(script, *flags, "--capture-video", cwd=tmp_path, env={"DISPLAY": "", "XDG_RUNTIME_DIR": ""})
    assert result.returncode == 0, result.stderr
    assert not [line for line in result.stderr.splitlines() if line.startswith("error:")], result.stderr
    videos = sorted((tmp_path / "videos").rglob("*.mp4"))
    assert videos, f"no mp4 under videos/: {result.stdout}\n{result.stderr}"
    assert videos[0].parent.name == single_run_dir(tmp_path).name  # videos/{run_name}/
    assert count_frames(videos[0]) > 1
    frame = first_frame(videos[0])
    assert frame.std() > 5  # a rendered scene, not a blank frame


ERROR_CASES = [
    ("ppo_continuous.py", ["--env-id", "CartPole-v1"], "ppo_discrete.py"),
    ("ppo_discrete.py", ["--env-id", "Pendulum-v1"], "ppo_continuous.py"),
    (
        "ppo_continuous.py",
        ["--env-id", "NoSuchEnv-v0"],
        "cannot make NoSuchEnv-v0: Environment `NoSuchEnv` doesn't exist",
    ),
    ("ppo_discrete.py", ["--env-id", "CartPol-v1"], "Did you mean: `CartPole`?"),
    ("ppo_continuous.py", ["--num-steps", "100", "--num-minibatches", "32"], "--num-minibatches"),
    ("ppo_discrete.py", ["--num-envs", "3", "--num-steps", "5", "--num-minibatches", "4"], "--num-minibatches"),
    ("ppo_continuous.py", ["--total-timesteps", "1000"], "no iteration would run"),
    ("ppo_discrete.py", ["--hidden-sizes", "64", "0"], "--hidden-sizes must all be 1 or more, got (64, 0)"),
    ("ppo_discrete.py", ["--total-timesteps", "100"], "no iteration would run"),
    ("ppo_discrete.py", ["--num-envs", "0"], "--num-envs must be at least 1"),
    ("ppo_continuous.py", ["--eval-max-episode-steps", "0"], "--eval-max-episode-steps must be at least 1"),
    ("ppo_discrete.py", ["--eval-max-episode-steps", "-5"], "--eval-max-episode-steps must be at least 1"),
    ("ppo_continuous.py", ["--async-envs", "--capture-video"], "drop one of the two"),
    ("ppo_discrete.py", ["--async-envs", "--capture-video"], "drop one of the two"),
    ("ppo_continuous.py", ["--cudagraphs"], "add --compile"),
    ("ppo_discrete.py", ["--compile", "--cudagraphs", "--no-cuda"], "--cudagraphs needs CUDA"),
    ("ppo_continuous.py", ["--gamma", "1.5"], "--gamma must be between 0 and 1"),
    ("ppo_discrete.py", ["--learning-rate", "-1"], "--learning-rate must be 0 or more"),
    ("ppo_discrete.py", ["--max-grad-norm", "-1"], "--max-grad-norm must be above 0"),
    ("ppo_continuous.py", ["--clip-obs", "-1"], "--clip-obs must be above 0"),
    ("ppo_continuous.py", ["--eval-checkpoint", "a.pt", "--init-from", "b.pt"], "drop --resume and --init-from"),
    ("ppo_discrete.py", ["--resume", "a.pt", "--init-from", "b.pt"], "pass only one"),
    ("ppo_continuous.py", ["--learning-rate", "nan"], "--learning-rate must be 0 or more, got nan"),  # passes < and >
    ("ppo_discrete.py", ["--clip-coef", "nan"], "--clip-coef must be above 0, got nan"),
    ("ppo_discrete.py", ["--ent-coef", "nan"], "--ent-coef must be a number, got nan"),
    ("ppo_discrete.py", ["--gae-lambda", "-0.1"], "--gae-lambda must be between 0 and 1"),
    ("ppo_continuous.py", ["--vf-coef", "-1"], "--vf-coef must be 0 or more"),
    ("ppo_continuous.py", ["--target-kl", "0"], "--target-kl must be above 0"),
    ("ppo_discrete.py", ["--clip-reward", "0"], "--clip-reward must be above 0"),
    ("ppo_discrete.py", ["--update-epochs", "0"], "--update-epochs must be at least 1"),
    ("ppo_continuous.py", ["--checkpoint-every", "-1"], "--checkpoint-every must be 0 (off) or more"),
    ("ppo_continuous.py", ["--seed", "-1"], "--seed must be between 0 and"),
    ("ppo_discrete.py", ["--seed", "4294967296"], "--seed must be between 0 and"),
    ("ppo_discrete.py", ["--eval-checkpoint", "a.pt", "--seed", "-3"], "--seed must be between 0 and"),
]


def assert_one_line_error(result, message, workdir):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and message in error_lines[0], result.stderr
    assert not (workdir / "runs").exists()  # nothing started


@pytest.mark.parametrize("script,flags,message", ERROR_CASES)
def test_bad_input_gives_one_line_error(script, flags, message, tmp_path):
    assert_one_line_error(run_script(script, *flags, cwd=tmp_path, timeout=120), message, tmp_path)


@pytest.mark.parametrize("script", ["ppo_continuous.py", "ppo_discrete.py"])
def test_computed_sizes_are_not_flags(script, tmp_path):
    """--batch-size was accepted and silently replaced by num_envs x num_steps: it is computed, not set."""
    assert "--batch-size" not in run_script(script, "--help", cwd=tmp_path, timeout=120).stdout
    for flag in ("--batch-size", "--minibatch-size", "--num-iterations"):
        result = run_script(script, flag, "64", cwd=tmp_path, timeout=120)
        assert result.returncode == 2 and f"Unrecognized options: {flag}" in result.stderr, result.stderr
        assert not (tmp_path / "runs").exists()


def test_cudagraphs_under_torchrun_gives_one_line_error(tmp_path):
    # torchrun's WORLD_SIZE is what the check reads; it fails before any process group is made
    result = run_script("ppo_continuous.py", "--compile", "--cudagraphs", cwd=tmp_path, env={"WORLD_SIZE": "2"})
    assert_one_line_error(result, "--cudagraphs is not supported under torchrun", tmp_path)


@pytest.mark.parametrize("script", ["ppo_continuous.py", "ppo_discrete.py"])
def test_video_without_moviepy_gives_one_line_error(script, tmp_path):
    result = run_script(script, "--capture-video", cwd=tmp_path, env=without_module(tmp_path, "moviepy"), timeout=120)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "--capture-video needs moviepy" in result.stderr


@pytest.mark.parametrize("script", ["ppo_continuous.py", "ppo_discrete.py"])
def test_ctrl_c_before_training_stops_with_one_line(script, tmp_path):
    """Ctrl-C before the training loop takes it over (here: while the envs are made) ends with a
    line that says so, not a traceback."""
    code = (
        "import runpy, sys, gymnasium as gym\n"
        "def ctrl_c(*args, **kwargs):\n    raise KeyboardInterrupt\n"
        "gym.vector.SyncVectorEnv.__init__ = ctrl_c\n"
        f"sys.argv = [{script!r}, '--no-cuda']\n"
        f"runpy.run_path({str(REPO / script)!r}, run_name='__main__')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1] == "stopped by Ctrl-C"
    assert not (tmp_path / "runs").exists()


def test_video_without_a_renderer_gives_one_line_error(tmp_path):
    # an OpenGL backend that does not exist stands in for a machine with no renderer at all
    result = run_script(
        "ppo_continuous.py", "--capture-video", cwd=tmp_path, env={"MUJOCO_GL": "nosuchgl"}, timeout=120
    )
    assert_one_line_error(
        result, "cannot make HalfCheetah-v4: invalid value for environment variable MUJOCO_GL", tmp_path
    )


def test_video_of_an_env_that_cannot_render_gives_one_line_error(tmp_path):
    result = run_script("ppo_continuous.py", "--capture-video", "--env-id", "my_envs:WideBounds-v0", cwd=tmp_path,
                        env={"PYTHONPATH": str(REPO / "tests")}, timeout=120)  # fmt: skip
    assert_one_line_error(result, "cannot make my_envs:WideBounds-v0: WideBoundsEnv() takes no arguments", tmp_path)


def test_exp_name_with_a_slash_makes_one_run_folder(tiny_discrete, tmp_path):
    result = run_script("ppo_discrete.py", *tiny_discrete, "--exp-name", "team/idea", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert single_run_dir(tmp_path).name.startswith("CartPole-v1__team-idea__1__")


def test_importing_a_script_runs_nothing(tmp_path):
    code = f"import sys; sys.path.insert(0, {str(REPO)!r}); import ppo_continuous, ppo_discrete"
    imported = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code], cwd=tmp_path, capture_output=True, text=True
    )
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout == ""
    assert list(tmp_path.iterdir()) == []  # no runs/ or videos/ folder


@pytest.mark.parametrize("script", ["ppo_continuous.py", "ppo_discrete.py"])
def test_progress_lines_show_the_first_and_last_step_with_the_latest_evaluation(script, tmp_path):
    """A line at the first iteration and at the end (the 10 s in between are not reached), flushed to a pipe."""
    flags = "--num-envs 2 --num-steps 32 --num-minibatches 2 --update-epochs 1 --total-timesteps 128 --eval-every 2"
    env_id = "InvertedPendulum-v4" if script == "ppo_continuous.py" else "CartPole-v1"
    result = run_script(script, "--env-id", env_id, *flags.split(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.findall(r"^step ([\d,]+)/128 \(\d+%\)  [\d,]+ steps/s", result.stdout, re.M) == ["64", "128"]
    assert re.search(r"step 128/128 \(100%\) .* return\(last 20\) [-\d.n/a]+  eval [-\d.]+  time left 00:00:00$",
                     result.stdout, re.M)  # fmt: skip


@pytest.mark.parametrize("module_name", ["ppo_continuous", "ppo_discrete"])
def test_progress_line_counts_time_left_past_a_day(module_name, capsys):
    """100,000 s left at 1 step/s is 27 h 46 min 40 s (by hand), not the clock time 03:46:40."""
    module = importlib.import_module(module_name)
    run = SimpleNamespace(args=SimpleNamespace(num_iterations=100_001, batch_size=1), rank=0, last_print=0.0)
    module.Run.progress(run, global_step=1, sps=1.0, recent_return=12.0, eval_return=34.56)
    assert (
        capsys.readouterr().out
        == "step 1/100,001 (0%)  1 steps/s  return(last 20) 12.0  eval 34.6  time left 27:46:40\n"
    )
    module.Run.progress(run, global_step=2, sps=1.0, recent_return=None)
    assert capsys.readouterr().out == ""  # within 10 s of the last line, and not the end


def test_tensorboard_hint_points_at_the_runs_folder_from_here(tiny_discrete, tmp_path):
    """A resumed run logs in its own folder, wherever it is resumed from: the hint names that folder's parent."""
    (tmp_path / "here").mkdir(), (tmp_path / "elsewhere").mkdir()
    first = run_script("ppo_discrete.py", *tiny_discrete, cwd=tmp_path / "here")
    run_dir = single_run_dir(tmp_path / "here")
    assert f"logs in runs/{run_dir.name} (`tensorboard --logdir runs`)" in first.stdout
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    checkpoint["args"]["total_timesteps"] = 256  # so that resuming it trains, and logs
    torch.save(checkpoint, run_dir / "checkpoint.pt")
    resumed = run_script("ppo_discrete.py", "--resume", str(run_dir / "checkpoint.pt"), cwd=tmp_path / "elsewhere")
    assert resumed.returncode == 0, resumed.stderr
    assert "(`tensorboard --logdir ../here/runs`)" in resumed.stdout


def test_the_test_script_server_stops_a_script_as_a_fresh_interpreter_does(tmp_path):
    """run_script forks tests/script_server.py (torch and gymnasium imported once) instead of starting python: the
    exit code and the output must be what `python SCRIPT FLAGS` gives."""
    for flags in (["--num-envs", "0"], ["--env-id", "CartPol-v1"], ["--no-such-flag"]):
        served = run_script("ppo_discrete.py", *flags, cwd=tmp_path, timeout=120)
        command, env = (
            [sys.executable, str(REPO / "ppo_discrete.py"), *flags],
            {**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        fresh = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert served.returncode != 0
        assert (served.returncode, served.stdout, served.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)
