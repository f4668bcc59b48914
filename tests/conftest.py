import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SCRIPTS = ["ppo_continuous.py", "ppo_discrete.py"]


def run_script(script, *flags, cwd, env=None, timeout=600, python_prefix=()):
    """Run one of the scripts as a user would, in `cwd`, and return the finished process."""
    run_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    return subprocess.run(
        [sys.executable, *python_prefix, str(REPO / script), *flags],
        cwd=cwd,
        env=run_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def without_module(tmp_path, name):
    """Environment variables under which `name` looks as it does where the package is not installed: Python finds
    no such module (importlib.util.find_spec gives None) and `import name` fails."""
    blocker = tmp_path / "blocker"
    blocker.mkdir(exist_ok=True)
    (blocker / "sitecustomize.py").write_text(f"import sys\nsys.modules[{name!r}] = None\n")
    return {"PYTHONPATH": str(blocker)}


def read_scalars(run_dir):
    """All scalars of a TensorBoard run directory: {tag: [(step, value), ...]}, in the order they were
    logged. (The accumulator reads event files in name order, and two writers of one test process in
    the same second are named by a per-process counter, where "...10" sorts before "...9".)"""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {
        tag: [
            (event.step, event.value) for event in sorted(accumulator.Scalars(tag), key=lambda event: event.wall_time)
        ]
        for tag in accumulator.Tags()["scalars"]
    }


def single_run_dir(cwd):
    run_dirs = list((Path(cwd) / "runs").iterdir())
    assert len(run_dirs) == 1, run_dirs
    return run_dirs[0]


@pytest.fixture
def tiny_continuous():
    """Flags for a fast continuous run: two iterations of a small batch."""
    return ["--env-id", "InvertedPendulum-v4", "--num-steps", "64", "--num-minibatches", "4",
            "--update-epochs", "2", "--total-timesteps", "128"]  # fmt: skip


@pytest.fixture
def tiny_discrete():
    return ["--env-id", "CartPole-v1", "--num-envs", "2", "--num-steps", "32", "--num-minibatches", "2",
            "--update-epochs", "2", "--total-timesteps", "128"]  # fmt: skip


def interrupting_loss(real_loss, at_call):
    """A stand-in for `ppo_loss` that sends this process SIGINT (Ctrl-C) during its `at_call`-th
    call, i.e. in the middle of an update, then computes the real loss."""
    calls = []

    def loss_then_interrupt(*loss_args):
        calls.append(1)
        if len(calls) == at_call:
            os.kill(os.getpid(), signal.SIGINT)
        return real_loss(*loss_args)

    return loss_then_interrupt
