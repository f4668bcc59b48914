"""The commands the README and docs/ show still run as written: their flags parse and pass validation."""

import importlib
import re
import shlex

import pytest
import tyro
from conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def script_commands(page):
    """(script, flags) of every `ppo_*.py` command in the page's bash blocks, continuation lines joined."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", page.read_text(), re.S):
        assignment = re.compile(r'^(\w+)="(.*?)"$', re.S | re.M)  # NAME="..." and then $NAME
        for name, value in assignment.findall(block):
            block = block.replace(f"${name}", " ".join(value.split()))
        block = assignment.sub("", block)
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            while words:  # `a && b && c`: each command on its own
                command, words = (
                    (words[: words.index("&&")], words[words.index("&&") + 1 :]) if "&&" in words else (words, [])
                )
                files = [i for i, word in enumerate(command) if word.endswith(".py")]  # the first is what runs
                launched = command[0] in ("python", "python3", "torchrun")
                if launched and files and command[files[0]] in ("ppo_continuous.py", "ppo_discrete.py"):
                    commands.append((command[files[0]], command[files[0] + 1 :]))
    return commands


def test_the_readme_shows_both_quick_start_commands_and_each_script():
    commands = script_commands(REPO / "README.md")
    assert ("ppo_continuous.py", []) in commands  # the quick start: the default env
    assert {script for script, _ in commands} == {"ppo_continuous.py", "ppo_discrete.py"}
    assert "pip install -r requirements.txt && python -m pytest" in (REPO / "README.md").read_text()
    assert len((REPO / "README.md").read_text().splitlines()) <= 250


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_command_shown_parses_and_validates(page, monkeypatch):
    commands = script_commands(page)
    if page.name == "README.md":
        assert len(commands) >= 10  # the quick start and the examples were found
    for script, flags in [(script, flags) for script, flags in commands if "--help" not in flags]:
        module = importlib.import_module(script[: -len(".py")])
        monkeypatch.setattr("sys.argv", [script, *flags])
        args = module.validate_args(tyro.cli(module.Args, args=flags))  # tyro exits on an unknown flag
        assert args.batch_size % args.num_minibatches == 0, (page.name, flags)
