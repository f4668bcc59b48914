"""Any gymnasium task: dm_control, `module:Env` ids, a custom MuJoCo XML, Dict observations,
wide action bounds, MultiDiscrete actions, clear errors for spaces the agents cannot handle, and
envs that return nan."""

import importlib
import itertools
import math
import signal
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import REPO, read_scalars, run_script, single_run_dir

TESTS = str(REPO / "tests")
XML = str(REPO / "tests" / "assets" / "long_pole_cart.xml")
SMALL = ["--num-envs", "2", "--num-steps", "32", "--num-minibatches", "2", "--update-epochs", "1",
         "--total-timesteps", "128"]  # fmt: skip


def run_ok(script, *flags, cwd, env=None):
    result = run_script(script, *flags, cwd=cwd, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def one_line_error(result, *messages):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    for message in messages:
        assert message in errors[0], errors[0]


def test_dm_control_task_trains_and_logs_full_episodes(tmp_path):
    flags = ["--env-id", "dm_control/cartpole-swingup-v0", "--num-envs", "2", "--num-steps", "512",
             "--num-minibatches", "4", "--update-epochs", "1", "--total-timesteps", "2048", "--save-model"]  # fmt: skip
    run_ok("ppo_continuous.py", *flags, cwd=tmp_path)
    run_dir = single_run_dir(tmp_path)
    assert run_dir.name.startswith("dm_control-cartpole-swingup-v0__")  # the "/" does not nest folders
    scalars = read_scalars(run_dir)
    assert [value for _, value in scalars["charts/episodic_length"]] == [1000, 1000]  # the time limit
    assert all(math.isfinite(value) for _, value in scalars["losses/value_loss"])
    module = importlib.import_module("ppo_continuous")
    checkpoint = module.load_checkpoint(str(run_dir / "checkpoint.pt"))
    assert checkpoint["observation_shape"] == [5]  # Dict(position 3, velocity 2) flattened


def test_dm_control_video(tmp_path):
    flags = ["--env-id", "dm_control/cartpole-swingup-v0", *SMALL, "--capture-video"]
    run_ok("ppo_continuous.py", *flags, cwd=tmp_path)
    import imageio_ffmpeg

    videos = list((tmp_path / "videos").rglob("*.mp4"))
    assert len(videos) == 1
    frames, _ = imageio_ffmpeg.count_frames_and_secs(str(videos[0]))
    assert frames > 1


@pytest.mark.parametrize("env_id, env_kwargs, camera", [("Humanoid-v4", {}, "track"), ("HalfCheetah-v4", {}, "track"),
                                                       ("HalfCheetah-v4", {"camera_id": -1}, None),
                                                       ("InvertedPendulum-v4", {}, None)])  # fmt: skip
def test_videos_of_mujoco_follow_the_body(env_id, env_kwargs, camera, tmp_path):
    """gymnasium 1.4 films MuJoCo envs from a still free camera, which a walker leaves within seconds (a Humanoid
    video showed an empty floor after 3 s). The filmed env renders from the model's "track" camera, which follows
    the body; a camera chosen with --env-kwargs stays, and a model without a "track" camera keeps the free one."""
    module = importlib.import_module("ppo_continuous")
    env = module.make_env(module.Args(env_id=env_id), 0, env_kwargs, video_folder=str(tmp_path))()
    model, renderer = env.unwrapped.model, env.unwrapped.mujoco_renderer
    assert renderer.camera_id == (model.camera(camera).id if camera else -1)
    assert camera is None or model.cam_mode[renderer.camera_id] == 2  # mjCAMLIGHT_TRACKCOM: it follows the body
    env.close()


@pytest.mark.parametrize("script", ["ppo_discrete.py", "ppo_continuous.py"])
def test_video_of_an_episode_that_never_ends_stops_at_the_frame_cap(script, tmp_path):
    """A video's frames stay in memory until it is written; on an env registered without a time limit the
    filmed episode may never end, so the video stops at 1000 frames (VIDEO_MAX_FRAMES): the reset frame
    and 1000 steps' frames make 1001, after which gymnasium's RecordVideo writes it. Without the cap the
    frames of all 1,280 steps piled up and were written at the end: 1,281 frames."""
    env_id = "my_envs:Endless-v0" if script == "ppo_discrete.py" else "my_envs:EndlessBox-v0"
    run_ok(script, "--env-id", env_id, "--num-envs", "1", "--num-steps", "256", "--num-minibatches", "4",
           "--update-epochs", "1", "--total-timesteps", "1280", "--capture-video",
           cwd=tmp_path, env={"PYTHONPATH": TESTS})  # fmt: skip
    import imageio_ffmpeg

    videos = list((tmp_path / "videos").rglob("*.mp4"))
    assert len(videos) == 1
    frames, _ = imageio_ffmpeg.count_frames_and_secs(str(videos[0]))
    assert frames == 1001


def test_module_env_id_with_dict_observations(tmp_path):
    result = run_ok("ppo_continuous.py", "--env-id", "my_envs:DictObservation-v0", *SMALL, "--save-model",
                    cwd=tmp_path, env={"PYTHONPATH": TESTS})  # fmt: skip
    module = importlib.import_module("ppo_continuous")
    checkpoint = module.load_checkpoint(str(single_run_dir(tmp_path) / "checkpoint.pt"))
    assert checkpoint["observation_shape"] == [3]  # Dict(target 1, position 2) flattened
    assert "my_envs-DictObservation-v0__" in result.stdout


def test_custom_mujoco_xml_via_env_kwargs(tmp_path):
    module = importlib.import_module("ppo_continuous")
    args = module.Args(env_id="InvertedPendulum-v5", env_kwargs=(f"xml_file={XML}", "frame_skip=3"), num_envs=1)
    envs = module.make_envs(args)
    inner = envs.unwrapped.envs[0].unwrapped
    assert inner.model.body("tip_mass").mass[0] == pytest.approx(0.4)  # our model, not gymnasium's
    assert inner.frame_skip == 3  # a literal value reaches gym.make as an int
    envs.close()
    run_ok("ppo_continuous.py", "--env-id", "InvertedPendulum-v5", "--env-kwargs", f"xml_file={XML}", *SMALL,
           cwd=tmp_path)  # fmt: skip


def test_relative_xml_path_is_resolved_from_the_working_directory(tmp_path, monkeypatch):
    module = importlib.import_module("ppo_continuous")
    (tmp_path / "robots").mkdir()
    (tmp_path / "robots" / "arm.xml").write_text("<mujoco/>")
    monkeypatch.chdir(tmp_path)
    kwargs = module.parse_env_kwargs(["xml_file=robots/arm.xml", "frame_skip=4", "reset_noise_scale=0.1", "name=x"])
    assert kwargs == {"xml_file": str(tmp_path / "robots" / "arm.xml"), "frame_skip": 4,
                      "reset_noise_scale": 0.1, "name": "x"}  # fmt: skip


def test_relative_xml_path_is_saved_absolute(tmp_path, monkeypatch):
    """So that resuming or evaluating the run from another directory finds the same model."""
    module = importlib.import_module("ppo_continuous")
    (tmp_path / "robots").mkdir()
    (tmp_path / "robots" / "arm.xml").write_text("<mujoco/>")
    monkeypatch.chdir(tmp_path)
    args = module.validate_args(module.Args(env_kwargs=("xml_file=robots/arm.xml", "frame_skip=4")))
    assert args.env_kwargs == (f"xml_file={tmp_path / 'robots' / 'arm.xml'}", "frame_skip=4")


def wide_bounds_envs(rescale):
    module = importlib.import_module("ppo_continuous")
    importlib.import_module("my_envs")
    args = module.Args(env_id="my_envs:WideBounds-v0", norm_obs=False, norm_reward=False, rescale_actions=rescale)
    envs = module.make_envs(module.validate_args(replace(args, num_envs=4, num_minibatches=4)))
    envs.reset(seed=0)
    return envs


def test_actions_are_clipped_to_the_env_bounds_not_to_unit(monkeypatch):
    monkeypatch.syspath_prepend(TESTS)
    envs = wide_bounds_envs(rescale=False)
    _, _, _, _, infos = envs.step(np.array([[5.0], [-5.0], [1.5], [-0.5]], dtype=np.float32))
    np.testing.assert_allclose(infos["received"][:, 0], [2.0, -2.0, 1.5, -0.5])
    envs.close()


def test_rescale_actions_maps_unit_interval_onto_bounds(monkeypatch):
    monkeypatch.syspath_prepend(TESTS)
    envs = wide_bounds_envs(rescale=True)
    # low + (a + 1) / 2 * (high - low) with [-2, 2]: a = 0.5 -> 1.0, a = 5 is clipped to 1 first -> 2.0
    _, _, _, _, infos = envs.step(np.array([[0.5], [5.0], [-1.0], [0.0]], dtype=np.float32))
    np.testing.assert_allclose(infos["received"][:, 0], [1.0, 2.0, -2.0, 0.0], atol=1e-6)
    envs.close()


def test_multidiscrete_log_prob_and_entropy_sum_independent_categoricals():
    module = importlib.import_module("ppo_discrete")
    torch.manual_seed(0)
    agent = module.Agent(5, [3, 2])
    with torch.no_grad():
        agent.actor[-1].weight.normal_()  # non-uniform logits
        obs = torch.randn(6, 5)
        action, logprob, entropy, _ = agent.get_action_and_value(obs)
        logits = agent.actor(obs)
    assert action.shape == (6, 2) and action[:, 0].max() <= 2 and action[:, 1].max() <= 1
    log_p = [torch.log_softmax(logits[:, :3], -1), torch.log_softmax(logits[:, 3:], -1)]
    expected_logprob = log_p[0].gather(1, action[:, :1])[:, 0] + log_p[1].gather(1, action[:, 1:])[:, 0]
    expected_entropy = sum(-(part.exp() * part).sum(-1) for part in log_p)
    torch.testing.assert_close(logprob, expected_logprob)
    torch.testing.assert_close(entropy, expected_entropy)
    deterministic = agent.get_action_and_value(obs, deterministic=True)[0]
    torch.testing.assert_close(deterministic, torch.stack([logits[:, :3].argmax(-1), logits[:, 3:].argmax(-1)], -1))


def test_multidiscrete_env_trains_saves_and_evaluates(tmp_path):
    env = {"PYTHONPATH": TESTS}
    run_ok("ppo_discrete.py", "--env-id", "my_envs:MultiDiscrete-v0", *SMALL, "--save-model", cwd=tmp_path, env=env)
    path = single_run_dir(tmp_path) / "checkpoint.pt"
    module = importlib.import_module("ppo_discrete")
    assert module.load_checkpoint(str(path))["action_shape"] == [3, 2]
    result = run_ok("ppo_discrete.py", "--eval-checkpoint", str(path), "--eval-episodes", "2", cwd=tmp_path, env=env)
    assert "over 2 episodes" in result.stdout


@pytest.mark.parametrize(
    "script,env_id,messages",
    [
        ("ppo_continuous.py", "my_envs:ImageObservation-v0", ["image observations", "CNN"]),
        ("ppo_discrete.py", "my_envs:ImageObservation-v0", ["image observations", "CNN"]),
        ("ppo_discrete.py", "my_envs:SequenceObservation-v0", ["Sequence(", "of no fixed size"]),
        ("ppo_continuous.py", "my_envs:TextAction-v0", ["Text(", "wrap the env's actions"]),
        ("ppo_continuous.py", "my_envs:TupleAction-v0", ["Tuple(", "wrap the env's actions"]),
        ("ppo_discrete.py", "my_envs:TupleAction-v0", ["Tuple(", "wrap the env's actions"]),
        ("ppo_continuous.py", "my_envs:MultiDiscrete-v0", ["use ppo_discrete.py"]),
        ("ppo_discrete.py", "my_envs:WideBounds-v0", ["use ppo_continuous.py"]),
        ("ppo_continuous.py", "no_such_module:Env-v0", ["No module named 'no_such_module'"]),
        ("ppo_continuous.py", "my_envs:MatrixAction-v0", ["2-D actions", "flat vector"]),
        ("ppo_discrete.py", "my_envs:NestedMultiDiscrete-v0", ["2-D MultiDiscrete"]),
        ("ppo_discrete.py", "my_envs:ShiftedDiscrete-v0", ["start at 1, not 0", "shift them to 0"]),
        ("ppo_continuous.py", "my_envs:DictAction-v0", ["Dict(", "wrap the env's actions"]),
        ("ppo_discrete.py", "my_envs:DictAction-v0", ["Dict(", "wrap the env's actions"]),
        ("ppo_continuous.py", "HalfCheetah-v3", ["cannot make HalfCheetah-v3", "gymnasium-robotics"]),  # retired
        ("ppo_discrete.py", "LunarLander-v3", ["cannot make LunarLander-v3", "Box2D is not installed"]),  # no extra
    ],
)
def test_unsupported_spaces_and_ids_give_one_line_errors_before_training(script, env_id, messages, tmp_path):
    result = run_script(script, "--env-id", env_id, *SMALL, cwd=tmp_path, env={"PYTHONPATH": TESTS})
    one_line_error(result, *messages)
    assert not (tmp_path / "runs").exists()


def test_rescale_actions_without_finite_bounds_gives_one_line_error(tmp_path):
    result = run_script("ppo_continuous.py", "--env-id", "my_envs:UnboundedBox-v0", "--rescale-actions", *SMALL,
                        cwd=tmp_path, env={"PYTHONPATH": TESTS})  # fmt: skip
    one_line_error(result, "--rescale-actions needs finite action bounds", "Box(-inf, inf")
    assert not (tmp_path / "runs").exists()


def test_bad_env_kwargs_give_one_line_errors(tmp_path):
    result = run_script(
        "ppo_continuous.py", "--env-id", "InvertedPendulum-v5", "--env-kwargs", "frame_skip", cwd=tmp_path
    )
    one_line_error(result, "key=value")
    result = run_script("ppo_continuous.py", "--env-id", "InvertedPendulum-v5", "--env-kwargs", "no_such_option=1",
                        *SMALL, cwd=tmp_path)  # fmt: skip
    one_line_error(result, "cannot make InvertedPendulum-v5 with --env-kwargs no_such_option=1")
    result = run_script("ppo_continuous.py", "--env-id", "InvertedPendulum-v5", "--env-kwargs",
                        "xml_file=./missing.xml", *SMALL, cwd=tmp_path)  # fmt: skip
    one_line_error(result, "missing.xml")
    # a relative path that is not there: gymnasium would name a file in its own assets folder instead
    result = run_script("ppo_continuous.py", "--env-id", "InvertedPendulum-v5", "--env-kwargs",
                        "xml_file=robots/missing.xml", *SMALL, cwd=tmp_path)  # fmt: skip
    one_line_error(result, f"--env-kwargs xml_file=robots/missing.xml: no such file here ({tmp_path})")
    # a value that cannot be what the env takes: gym.make accepts it, the first step would not
    result = run_script("ppo_continuous.py", "--env-id", "Pendulum-v1", "--env-kwargs", "g=abc", *SMALL, cwd=tmp_path)
    one_line_error(result, "--env-kwargs g=abc: Pendulum-v1 takes g of type float (default 10.0)")
    result = run_script("ppo_discrete.py", "--env-id", "CartPole-v1", "--env-kwargs", "sutton_barto_reward=yes",
                        *SMALL, cwd=tmp_path)  # fmt: skip
    one_line_error(result, "CartPole-v1 takes sutton_barto_reward of type bool")
    result = run_script("ppo_continuous.py", "--env-id", "InvertedPendulum-v5", "--env-kwargs", "frame_skip=2.5",
                        *SMALL, cwd=tmp_path)  # fmt: skip
    one_line_error(result, "InvertedPendulum-v5 takes frame_skip of type int (default 2)")
    result = run_script(
        "ppo_discrete.py",
        "--env-id",
        "CartPole-v1",
        "--env-kwargs",
        "no_such_option=1",
        "--capture-video",
        *SMALL,
        cwd=tmp_path,
    )  # the keyword is wrong, not the renderer
    one_line_error(result, "cannot make CartPole-v1 with --env-kwargs no_such_option=1")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "script, env_id", [("ppo_discrete.py", "my_envs:NanReward-v0"), ("ppo_continuous.py", "my_envs:NanRewardBox-v0")]
)
def test_a_diverged_update_stops_the_run_and_keeps_the_last_finite_checkpoint(script, env_id, tmp_path):
    """The env's rewards turn nan at its 41st step, which with 10-step episodes and NEXT_STEP autoreset
    is vector step 45: in the third 16-step iteration, whose update's gradients are then nan. The run
    stops there with a one-line error, before anything of that iteration is saved; its logs are
    flushed, and checkpoint.pt still holds the second iteration's finite weights."""
    flags = ["--env-id", env_id, "--num-envs", "1", "--num-steps", "16", "--num-minibatches", "2",
             "--update-epochs", "1", "--total-timesteps", "160", "--checkpoint-every", "1"]  # fmt: skip
    result = run_script(script, *flags, cwd=tmp_path, env={"PYTHONPATH": TESTS})
    one_line_error(result, "training diverged at step 48 (", "nan")
    run_dir = single_run_dir(tmp_path)
    checkpoint = importlib.import_module(script[:-3]).load_checkpoint(str(run_dir / "checkpoint.pt"))
    assert checkpoint["global_step"] == 32
    assert all(torch.isfinite(tensor).all() for tensor in checkpoint["agent"].values())
    assert [step for step, _ in read_scalars(run_dir)["losses/value_loss"]] == [16, 32]


@pytest.mark.parametrize("module_name, env_id", [("ppo_discrete", "my_envs:NanReward-v0"),
                                                 ("ppo_continuous", "my_envs:NanRewardBox-v0")])  # fmt: skip
@pytest.mark.filterwarnings("ignore:.*The reward is a NaN value")  # gymnasium's env checker: nan is the point here
def test_evaluation_ends_when_an_episode_return_is_nan(module_name, env_id):
    """An env whose rewards are nan from the start: each sub-env's first episode (10 steps) ends
    with a nan return, and evaluation reports it instead of waiting for a finite one forever."""
    module, _ = importlib.import_module(module_name), importlib.import_module("my_envs")
    args = module.validate_args(module.Args(env_id=env_id, env_kwargs=["nan_after=0"], num_envs=2, num_minibatches=2))
    envs = module.make_envs(args)
    agent = module.Agent(3, [2] if module_name == "ppo_discrete" else 1)

    def give_up(signum, frame):
        raise TimeoutError("evaluate() did not return")

    previous = signal.signal(signal.SIGALRM, give_up)
    signal.alarm(60)
    try:
        returns = module.evaluate(agent, envs, True, 0, torch.device("cpu"))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        envs.close()
    assert returns.shape == (2,) and np.isnan(returns).all()


@pytest.mark.parametrize("module_name", ["ppo_continuous", "ppo_discrete"])
def test_running_mean_std_gives_gymnasiums_numbers_from_single_rows_and_batches(module_name):
    """The scripts' RunningMeanStd writes out np.mean's and np.var's arithmetic (a single row: its mean is the row,
    its variance 0): fed the same rows, one at a time and in batches of several envs' rows, it must hold gymnasium's
    mean, variance and count to the bit after every update, for float32 and float64 observations and returns."""
    from gymnasium.wrappers.utils import RunningMeanStd

    module = importlib.import_module(module_name)
    rng = np.random.default_rng(0)
    for shape, dtype in itertools.product(((5,), ()), (np.float32, np.float64)):
        ours, theirs = module.RunningMeanStd(shape=shape, dtype=dtype), RunningMeanStd(shape=shape, dtype=dtype)
        for rows in (1, 1, 3, 1, 2, 1, 1, 4, 16, 7) * 20:
            batch = rng.normal(3.0, 2.0, (rows, *shape)).astype(dtype)
            ours.update(batch)
            theirs.update(batch)
            for name in ("mean", "var", "count"):
                np.testing.assert_array_equal(getattr(ours, name), getattr(theirs, name), strict=True)
        assert ours.count == 1e-4 + 37 * 20 and abs(ours.var - 4.0).max() < 0.5  # it learned from the rows
