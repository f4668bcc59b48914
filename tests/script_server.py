"""Runs the scripts for the tests as `python SCRIPT FLAGS...` would, in a fork of one process that has already imported
torch, gymnasium and tyro: a run that stops at a flag check takes a fraction of a second instead of the ~3 s of those
imports. Reads one JSON request per line on stdin; for each, forks a child that runs the script as `__main__` (an
uncaught exception or SystemExit ends it just as it ends `python SCRIPT`), and writes back the child's pid, then its
exit code. Started and spoken to by conftest.run_script; import-time settings (sitecustomize) need a fresh interpreter
instead."""

import json
import os
import runpy
import sys

import gymnasium  # noqa: F401  (the scripts' slow imports, done once; none of them imports mujoco or pygame)
import numpy  # noqa: F401
import torch  # noqa: F401
import torch.distributed  # noqa: F401
import tyro  # noqa: F401
from torch.utils.tensorboard import SummaryWriter  # noqa: F401

for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:  # the child: become `python SCRIPT FLAGS...` run in cwd with env
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        stdin = os.open(os.devnull, os.O_RDONLY)
        os.dup2(stdin, 0)
        for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
        extra_paths = [path for path in request["env"].get("PYTHONPATH", "").split(os.pathsep) if path]
        sys.path[0:1] = [os.path.dirname(request["script"]), *extra_paths]  # as python puts them
        sys.argv = [request["script"], *request["flags"]]
        runpy.run_path(request["script"], run_name="__main__")
        sys.exit(0)
    print(pid, flush=True)  # stdout is the pipe to run_script; the child wrote nothing to it (its fd 1 is a file)
    _, status = os.waitpid(pid, 0)
    print(os.waitstatus_to_exitcode(status), flush=True)
