import functools
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SCRIPTS = ["ppo_continuous.py", "ppo_discrete.py"]


def run_script(script, *flags, cwd, env=None, timeout=600, python_prefix=()):
    """Run one of the scripts as a user would, in `cwd`, and return the finished process. A fork of the test session's
    script server (script_server.py) runs it, unless it needs a fresh interpreter: a python_prefix, or a sitecustomize
    on its PYTHONPATH."""
    run_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    paths = (env or {}).get("PYTHONPATH", "").split(os.pathsep)
    if python_prefix or any(path and (Path(path) / "sitecustomize.py").exists() for path in paths):
        command = [sys.executable, *python_prefix, str(REPO / script), *flags]
        return subprocess.run(command, cwd=cwd, env=run_env, capture_output=True, text=True, timeout=timeout)
    return _script_server().run(str(REPO / script), list(flags), cwd, run_env, timeout)


class _ScriptServer:
    def __init__(self):
        server = [sys.executable, str(Path(__file__).parent / "script_server.py")]
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        self.process = subprocess.Popen(server, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0, env=env)
        self.replies = b""

    def read_line(self, timeout):
        while b"\n" not in self.replies:
            if not select.select([self.process.stdout], [], [], timeout)[0]:
                return None
            chunk = os.read(self.process.stdout.fileno(), 4096)
            assert chunk, "the script server has stopped"
            self.replies += chunk
        line, self.replies = self.replies.split(b"\n", 1)
        return int(line)

    def run(self, script, flags, cwd, env, timeout):
        out = Path(tempfile.mkdtemp())
        request = dict(script=script, flags=flags, cwd=str(cwd), env=env, stdout=str(out / "1"), stderr=str(out / "2"))
        self.process.stdin.write(json.dumps(request).encode() + b"\n")
        pid, returncode = self.read_line(60), self.read_line(timeout)
        stdout, stderr = ((out / name).read_text() for name in ("1", "2"))  # as far as they got
        shutil.rmtree(out)
        if returncode is None:
            os.kill(pid, signal.SIGKILL)
            self.read_line(60)
            raise subprocess.TimeoutExpired([script, *flags], timeout, stdout, stderr)
        return subprocess.CompletedProcess([script, *flags], returncode, stdout, stderr)


@functools.cache
def _script_server():
    return _ScriptServer()


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
