"""The benchmark scripts' own logic, where a mistake would quietly publish wrong figures."""
import importlib
import sys

import tyro
from conftest import REPO


def test_results_counts_a_finished_run_whatever_its_logging_flags_and_age():
    """benchmarks/results.py trains a row's run only when no finished run of the same training is
    there. W&B tracking changes no training, and a run saved before such a flag existed has no
    entry for it in its checkpoint: both still count. A different hyperparameter does not."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    results, module = importlib.import_module("results"), importlib.import_module("ppo_discrete")
    expected = results.expected_args("ppo_discrete.py", "CartPole-v1", 1, 500_000, [])
    flags = ["--env-id", "CartPole-v1", "--seed", "1", "--total-timesteps", "500000", "--exp-name", "results-default",
             "--save-model", "--wandb-project-name", "mine", "--wandb-entity", "me"]  # fmt: skip
    tracked = {**vars(module.validate_args(tyro.cli(module.Args, args=flags))), "track": True}  # no wandb needed
    assert results.same_training(tracked, expected)
    older = {key: value for key, value in tracked.items() if key not in ("track", "wandb_project_name", "wandb_entity")}
    assert results.same_training(older, expected)
    assert not results.same_training({**tracked, "learning_rate": 1e-3}, expected)
