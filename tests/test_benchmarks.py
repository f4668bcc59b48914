"""The benchmark scripts' own logic, where a mistake would quietly publish wrong figures."""

import importlib
import json
import sys

import numpy as np
import pytest
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
    # a run saved before a training flag existed ran with what is now its default, and only then counts
    before_norm_value = {key: value for key, value in tracked.items() if key != "norm_value"}
    assert results.same_training(before_norm_value, expected)
    with_norm_value = results.expected_args("ppo_discrete.py", "CartPole-v1", 1, 500_000, ["--norm-value"])
    assert not results.same_training(before_norm_value, with_norm_value)


def test_results_trains_only_the_rows_of_the_envs_and_configs_asked_for(monkeypatch, tmp_path):
    """`--only Humanoid-v4 --configs default` looks at Humanoid's default row alone, every seed of it, and none of the
    10M-step presets beside it (here every run counts as finished already: nothing trains)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    results, looked_at = importlib.import_module("results"), []
    monkeypatch.setattr(results, "REPO", tmp_path)
    monkeypatch.setattr(results, "run_state", lambda *run: looked_at.append(run[1:4]) or ("finished", "", {}))
    results.train_missing({"Humanoid-v4"}, jobs=1, configs={"default"})
    assert sorted(looked_at) == [("Humanoid-v4", "default", seed) for seed in (1, 2, 3, 4, 5)]
    looked_at.clear()
    results.train_missing(None, jobs=1, configs={"many-envs"})
    assert sorted(looked_at) == sorted(
        (env, "many-envs", seed) for env in ("CartPole-v1", "HalfCheetah-v4") for seed in (1, 2, 3)
    )


# what changes a run's training (tests/ lists them itself: a new Args field must be put on one side or the other)
TRAINING = {
    "env_id",
    "env_kwargs",
    "seed",
    "total_timesteps",
    "torch_deterministic",
    "learning_rate",
    "anneal_lr",
    "num_envs",
    "num_steps",
    "gamma",
    "gae_lambda",
    "bootstrap_truncated",
    "num_minibatches",
    "update_epochs",
    "norm_adv",
    "clip_coef",
    "clip_vloss",
    "ent_coef",
    "vf_coef",
    "max_grad_norm",
    "target_kl",
    "norm_obs",
    "norm_reward",
    "clip_obs",
    "clip_reward",
    "rescale_actions",
    "norm_value",
    "hidden_sizes",
    "activation",
    "batch_size",
    "minibatch_size",
    "num_iterations",
}  # fmt: skip (the last three are computed from the others)


@pytest.mark.parametrize("script", ["ppo_continuous", "ppo_discrete"])
def test_results_knows_whether_each_flag_changes_training(script):
    """A flag added to Args counts as training unless results.py's NOT_TRAINING names it, and a run
    saved before it existed holds no value for it: an evaluation-only flag left out of NOT_TRAINING
    made every finished run look different, so results.py trained them all again."""
    import dataclasses

    sys.path.insert(0, str(REPO / "benchmarks"))
    results, module = importlib.import_module("results"), importlib.import_module(script)
    fields = {field.name for field in dataclasses.fields(module.Args)}
    assert fields - results.NOT_TRAINING == TRAINING & fields
    assert not TRAINING & results.NOT_TRAINING


def test_sim_trace_splits_episodes_at_their_ends_and_finds_the_first_difference(tmp_path, capsys):
    """benchmarks/sim_trace.py backs the README's statement on MuJoCo versions. Hand-made traces:
    ends at steps 1 and 4 make episodes of 2 and 3 steps, with returns 1+2 and 3+4+5; a second
    trace differs first at step 2 (by 0.5) and ends its first episode a step later."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    sim_trace = importlib.import_module("sim_trace")
    obs = np.zeros((5, 2))
    trace_a = {
        "obs": obs,
        "rewards": np.array([1.0, 2, 3, 4, 5]),
        "ends": np.array([0, 1, 0, 0, 1], bool),
        "versions": "a",
    }
    lengths, returns = sim_trace.episode_returns(trace_a)
    assert lengths.tolist() == [2, 3] and returns.tolist() == [3.0, 12.0]

    changed = obs.copy()
    changed[2, 1] = 0.5
    trace_b = {**trace_a, "obs": changed, "ends": np.array([0, 0, 1, 0, 1], bool), "versions": "b"}
    np.savez(tmp_path / "a.npz", **trace_a)
    np.savez(tmp_path / "b.npz", **trace_b)
    sim_trace.compare(tmp_path / "a.npz", tmp_path / "a.npz")
    assert "identical" in capsys.readouterr().out
    sim_trace.compare(tmp_path / "a.npz", tmp_path / "b.npz")
    out = capsys.readouterr().out
    assert "first differ at step 2, by 0.5" in out
    assert "0 of the first 2 have the same length" in out  # (2, 3) against (3, 2)
    assert "mean: 7.50 and 7.50" in out and "largest difference of an episode pair 3" in out  # returns 6 and 9


def test_cleanrl_speed_takes_the_steady_rate_after_the_first_three_iterations(tmp_path):
    """benchmarks/cleanrl_speed.py backs the README's same-library comparison with CleanRL. Hand-made
    events of 6 iterations of 512 steps, each stamped at its iteration's end: slow first ones (start-up,
    compiling), then faster. From the 3rd event (step 1536, t = 12.0) to the last (step 3072, t = 12.2):
    1536 steps in 0.2 s = 7,680 steps/s. From the 2nd event it would be 2048 / 1.2 = 1,707, from the 4th
    1024 / 0.1 = 10,240."""
    from torch.utils.tensorboard import SummaryWriter

    sys.path.insert(0, str(REPO / "benchmarks"))
    cleanrl_speed = importlib.import_module("cleanrl_speed")
    writer = SummaryWriter(str(tmp_path))
    for step, wall_time in [(512, 10.0), (1024, 11.0), (1536, 12.0), (2048, 12.1), (2560, 12.15), (3072, 12.2)]:
        writer.add_scalar("charts/SPS", 0.0, step, walltime=wall_time)
    writer.close()
    assert cleanrl_speed.steady_steps_per_second(tmp_path) == pytest.approx(7_680, rel=1e-6)


def test_cleanrl_speed_reports_median_wall_times_and_cleanrls_over_ours():
    """By hand: CleanRL's wall times 300, 280, 290 s have median 290; ours 200, 190, 210 s median 200, so
    290 / 200 = 1.45x; the steady rates' medians are 1,000 and 1,500 steps/s."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    cleanrl_speed = importlib.import_module("cleanrl_speed")
    runs = {"CleanRL": [(300, 900), (280, 1000), (290, 1100)], "ours": [(200, 1400), (190, 1600), (210, 1500)]}
    row = cleanrl_speed.summary_row("HalfCheetah-v4", runs)
    assert row == "| HalfCheetah-v4 | 290 s, 1,000 steps/s | 200 s (1.45x), 1,500 steps/s |"


def test_cleanrl_speed_builds_each_env_stack_with_its_own_scripts_defaults(tmp_path):
    """--env-stacks times each script's env stack as the script builds it: CleanRL's make_env once per default env
    (4 on CartPole, no video), as make_env(env_id, idx, capture_video, run_name) in ppo.py and with gamma 0.99 added
    in ppo_continuous_action.py, and our make_envs with our defaults. Stand-ins with CleanRL's two signatures record
    the calls they get; ours is the real one."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    cleanrl_speed = importlib.import_module("cleanrl_speed")
    calls = tmp_path / "calls.txt"
    for module, parameters in (
        ("ppo", "env_id, idx, capture_video, run_name"),
        ("ppo_c", "env_id, idx, capture_video, run_name, gamma"),
    ):
        (tmp_path / f"{module}.py").write_text(
            "import gymnasium as gym\n"
            f"def make_env({parameters}):\n"
            f"    open({str(calls)!r}, 'a').write(repr(({parameters},)) + '\\n')\n"
            "    return lambda: gym.wrappers.RecordEpisodeStatistics(gym.make(env_id))\n"
        )
    names = {"env_id": "CartPole-v1", "n": cleanrl_speed.NUM_ENVS["CartPole-v1"]}
    for module, extra in (("ppo", ()), ("ppo_c", (0.99,))):
        calls.write_text("")
        make = cleanrl_speed.MAKE_CLEANRL.format(module=module, **names)
        assert cleanrl_speed.env_stack_microseconds(sys.executable, tmp_path, make) > 0
        assert calls.read_text().splitlines() == [repr(("CartPole-v1", i, False, "", *extra)) for i in range(4)]
    ours = cleanrl_speed.MAKE_OURS.format(module="ppo_discrete", **names) + "\nassert envs.num_envs == 4"
    assert cleanrl_speed.env_stack_microseconds(sys.executable, REPO, ours) > 0
    with pytest.raises(SystemExit, match="(?s)the env stack of .*No module named 'no_such_script'"):
        missing = cleanrl_speed.MAKE_OURS.format(module="no_such_script", **names)
        cleanrl_speed.env_stack_microseconds(sys.executable, REPO, missing)


def test_results_keeps_a_row_whose_runs_are_not_on_this_machine(tmp_path, monkeypatch):
    """`results.py --collect` on a machine that holds the runs of one row only: every other row keeps its
    figures from the last results.json instead of vanishing from the table, and a row that never had runs
    stays out."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    results = importlib.import_module("results")
    row = {"env_id": "Hopper-v4", "config": "default", "return_mean": 2359.8}
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "results.json").write_text(json.dumps({"machine": "m", "results": [row]}))
    monkeypatch.setattr(results, "OUT", tmp_path / "out")
    monkeypatch.setattr(results, "REPO", tmp_path)  # no runs/ here
    rows = [("ppo_continuous.py", env_id, "default", [1], 1_000_000, []) for env_id in ("Hopper-v4", "Walker2d-v4")]
    monkeypatch.setattr(results, "RUNS", rows)
    assert results.collect()["results"] == [row]


def test_results_table_says_which_seeds_an_eval_figure_is_of(tmp_path, monkeypatch):
    """A row whose runs were not all evaluated shows the eval figure with the seeds it comes from, and the
    return over all of them: 8800 is the one evaluated run's, (7000 + 8000) / 2 = 7500 both runs' mean."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    results = importlib.import_module("results")
    monkeypatch.setattr(results, "OUT", tmp_path)
    monkeypatch.setattr(results, "plot", lambda summary: None)
    runs = [{"seed": 1, "eval_return": None, "wall_s": 60.0}, {"seed": 3, "eval_return": 8800.0, "wall_s": 120.0}]
    row = {"env_id": "Humanoid-v4", "config": "large-net", "total_timesteps": 10_000_000, "seeds": [1, 3]}
    row |= {"eval_seeds": 1, "eval_mean": 8800.0, "eval_std": 0.0, "return_mean": 7500.0, "return_std": 500.0}
    results.write({"machine": "m", "results": [row | {"published": "p", "runs": runs}]})
    table_row = (tmp_path / "results.md").read_text().splitlines()[-1]
    assert table_row == "| Humanoid-v4 | large-net | 10M | 1, 3 | **7500.0 ± 500.0** | 8800.0 (seed 3) | p | 1.5 min |"


@pytest.mark.parametrize(
    "module_name, env_id, flags, steps, episodes",
    [
        ("ppo_continuous", "HalfCheetah-v4", {"num_envs": 2}, 1100, 2),
        ("ppo_continuous", "Hopper-v4", {"num_envs": 2, "norm_reward": False}, 300, 5),
        ("ppo_continuous", "Hopper-v4", {"num_envs": 1}, 300, 3),
        ("ppo_discrete", "CartPole-v1", {"num_envs": 1, "norm_obs": True, "norm_reward": True}, 300, 5),
        ("ppo_discrete", "CartPole-v1", {"num_envs": 4}, 100, 5),
    ],
)
def test_the_scripts_env_stacks_give_the_numbers_of_gymnasiums_wrappers(module_name, env_id, flags, steps, episodes):
    """Each script's make_envs (gymnasium's wrappers, with the script's faster RunningMeanStd) and the one-pass
    wrapper of benchmarks/one_pass_wrapper.py must do what gymnasium's own wrappers do: step by step, the same
    observations, rewards, flags and episode statistics, then the same running statistics, over episode ends
    (HalfCheetah's time limit at step 1,000; Hopper's and CartPole's falls, terminations, within a few dozen random
    steps). One env takes the single-row update; several envs, and the step after an episode's end, the batch one."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    one_pass_wrapper = importlib.import_module("one_pass_wrapper")
    module = importlib.import_module(module_name)
    args = module.validate_args(module.Args(env_id=env_id, cuda=False, **flags))
    assert one_pass_wrapper.same_numbers(module, args, steps) >= episodes
    expected = {key for key, on in (("obs_rms", args.norm_obs), ("return_rms", args.norm_reward)) if on}
    assert module.get_normalization(module.make_envs(args)).keys() == expected
