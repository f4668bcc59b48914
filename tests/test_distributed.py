"""Data parallel training with torch.distributed (gloo on CPU), two ranks on this machine."""

import importlib
import multiprocessing
import os
import socket

import numpy as np
import pytest
import torch
from conftest import interrupting_loss, read_scalars, run_script, single_run_dir

SETUPS = {"ppo_continuous": "InvertedPendulum-v4", "ppo_discrete": "CartPole-v1"}


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun_environment(rank, world_size, port):
    """The variables torchrun sets for each rank it starts."""
    return {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world_size),
            "LOCAL_WORLD_SIZE": str(world_size), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}  # fmt: skip


def rank_main(module_name, rank, port, workdir, args, interrupt_at_call, queue):
    os.environ.update(torchrun_environment(rank, 2, port))
    os.chdir(workdir)
    module = importlib.import_module(module_name)
    if interrupt_at_call:  # Ctrl-C reaching this rank alone, in the middle of an update
        module.ppo_loss = interrupting_loss(module.ppo_loss, interrupt_at_call)
    summary = module.train(module.Args(**args))
    state = {name: tensor.numpy().copy() for name, tensor in summary["agent"].state_dict().items()}
    stats = {key: {k: (v.numpy().copy() if torch.is_tensor(v) else v) for k, v in value.items()}
             for key, value in summary["normalization"].items()}  # fmt: skip
    queue.put((rank, state, stats, summary["global_step"], summary["interrupted"], summary["run_name"]))
    exit_like_the_scripts(queue)


def exit_like_the_scripts(queue):
    """Hand the result over, then skip interpreter teardown, where gloo's threads can abort a
    process (torch 2.13), as the scripts do under torchrun."""
    queue.close()
    queue.join_thread()
    os._exit(0)


def run_two_ranks(module_name, workdir, args, interrupt_rank=None, interrupt_at_call=0, rank1_args=None):
    context = multiprocessing.get_context("spawn")
    queue, port = context.Queue(), free_port()
    processes = [
        context.Process(
            target=rank_main,
            args=(
                module_name,
                rank,
                port,
                str(workdir),
                rank1_args if rank and rank1_args else args,
                interrupt_at_call if rank == interrupt_rank else 0,
                queue,
            ),
        )
        for rank in range(2)
    ]
    for process in processes:
        process.start()
    results = sorted(queue.get(timeout=300) for _ in processes)
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    return results


def tiny_args(module_name, **overrides):
    args = dict(env_id=SETUPS[module_name], num_envs=2, num_steps=32, num_minibatches=2, update_epochs=2,
                total_timesteps=4 * 128, norm_obs=True, norm_reward=True, cuda=False)  # fmt: skip
    args.update(overrides)
    return args


def assert_same_state(first, second):
    for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)


@pytest.mark.parametrize("module_name", list(SETUPS))
def test_two_ranks_stay_identical_and_count_both_ranks(module_name, tmp_path):
    # rank 1 gets another --seed, so only the broadcast from rank 0 can make their weights identical; --target-kl
    # below any KL: each update stops after one epoch, every rank at once, on the approx_kl averaged over the ranks
    args, rank1_args = tiny_args(module_name, target_kl=1e-12), tiny_args(module_name, target_kl=1e-12, seed=99)
    results = run_two_ranks(module_name, tmp_path, args, rank1_args=rank1_args)
    (_, state0, stats0, step0, _, run0), (_, state1, stats1, step1, _, run1) = results
    assert_same_state(state0, state1)  # parameters identical on both ranks
    for key in stats0:  # and so are the normalizer statistics
        assert stats0[key]["count"] == stats1[key]["count"]
        np.testing.assert_array_equal(stats0[key]["mean"], stats1[key]["mean"])
        np.testing.assert_array_equal(stats0[key]["var"], stats1[key]["var"])
    # rank 0's statistics, which every rank takes after each rollout: 1 reset + 4 x 32 steps of its 2 envs, plus
    # the wrapper's initial 1e-4
    assert stats0["obs_rms"]["count"] == pytest.approx(2 * (1 + 4 * 32) + 1e-4)
    # the global step counts both ranks: 4 iterations of 2 ranks x 2 envs x 32 steps
    assert step0 == step1 == 4 * 128 and run0 == run1
    run_dirs = list((tmp_path / "runs").iterdir())
    assert len(run_dirs) == 1  # rank 0 alone writes
    steps = [step for step, _ in read_scalars(run_dirs[0])["losses/value_loss"]]
    assert steps == [128, 256, 384, 512]
    # the ranks started from the same weights but trained (the check above is not vacuous)
    module = importlib.import_module(module_name)
    torch.manual_seed(1)
    fresh = module.Agent(*([4, 1] if module_name == "ppo_continuous" else [4, [2]])).state_dict()
    assert any(not np.array_equal(fresh[name].numpy(), state0[name]) for name in fresh)


def test_compiled_ranks_stay_identical_and_match_plain_ranks(tmp_path):
    """--compile all-reduces the gradients inside its one-graph update. Each rank has its own data
    and seed, so without that all-reduce their weights drift apart; with it they stay identical and
    log the plain two-rank run's losses within 1e-4."""
    losses = {}
    for name, flags in [("plain", {}), ("compiled", {"compile": True})]:
        (tmp_path / name).mkdir()
        args, rank1_args = tiny_args("ppo_continuous", **flags), tiny_args("ppo_continuous", seed=99, **flags)
        (_, state0, *_), (_, state1, *_) = run_two_ranks("ppo_continuous", tmp_path / name, args, rank1_args=rank1_args)
        assert_same_state(state0, state1)
        [run_dir] = (tmp_path / name / "runs").iterdir()
        losses[name] = read_scalars(run_dir)
    for tag in ["losses/value_loss", "losses/policy_loss", "losses/approx_kl"]:
        assert len(losses["plain"][tag]) == 4
        np.testing.assert_allclose([v for _, v in losses["compiled"][tag]], [v for _, v in losses["plain"][tag]],
                                   rtol=1e-4, atol=1e-6, err_msg=tag)  # fmt: skip


def sync_rank_main(rank, port, data, queue):
    os.environ.update(torchrun_environment(rank, 2, port))
    import torch.distributed as dist

    module = importlib.import_module("ppo_continuous")
    dist.init_process_group("gloo")
    envs = module.make_envs(module.Args(env_id="InvertedPendulum-v4", norm_reward=False, num_envs=1, cuda=False))
    module.normalizers(envs)["obs_rms"].obs_rms.update(data[rank])  # each rank's own observations
    module.sync_normalization(envs)
    synced = module.get_normalization(envs)["obs_rms"]
    dist.destroy_process_group()
    queue.put((rank, synced["mean"].numpy(), synced["var"].numpy(), synced["count"]))
    exit_like_the_scripts(queue)


def test_every_rank_normalizes_with_rank_0s_statistics():
    """Two ranks that saw different observations: after the sync both hold rank 0's running statistics, to the
    last bit (gymnasium's running mean and variance of the data it saw, with its initial count of 1e-4)."""
    rng = np.random.default_rng(0)
    data = [rng.normal(loc=3.0, scale=2.0, size=(50, 4)), rng.normal(loc=-5.0, scale=1.0, size=(70, 4))]
    context = multiprocessing.get_context("spawn")
    queue, port = context.Queue(), free_port()
    processes = [context.Process(target=sync_rank_main, args=(rank, port, data, queue)) for rank in range(2)]
    for process in processes:
        process.start()
    results = sorted(queue.get(timeout=120) for _ in processes)
    for process in processes:
        process.join(timeout=60)
    (_, mean0, var0, count0), (_, mean1, var1, count1) = results
    np.testing.assert_array_equal(mean1, mean0)
    np.testing.assert_array_equal(var1, var0)
    assert count0 == count1 == pytest.approx(50 + 1e-4)
    # rank 0's statistics of its own data: the mean of 50 observations, pulled a hair towards 0 by the initial count
    np.testing.assert_allclose(mean0, data[0].mean(0) * 50 / (50 + 1e-4), rtol=1e-9)
    np.testing.assert_allclose(var0, data[0].var(0), rtol=1e-4)


def return_rms_rank_main(rank, port, data, queue):
    os.environ.update(torchrun_environment(rank, 2, port))
    import torch.distributed as dist

    module = importlib.import_module("ppo_continuous")
    dist.init_process_group("gloo")
    rms = module.Agent(3, 1).return_rms
    for batch in data[rank]:
        module.update_return_rms(rms, batch, world_size=2)
    dist.destroy_process_group()
    queue.put((rank, rms.numpy().copy()))
    exit_like_the_scripts(queue)


def test_ranks_merge_their_returns_into_one_value_normalization():
    """--norm-value under torchrun: two ranks with batches of other sizes and scales end with the same statistics,
    those of all the returns together (numpy's mean and population variance of the concatenation)."""
    rng = np.random.default_rng(1)
    data = [
        [rng.normal(10, 3, size=n).astype(np.float32) for n in (40, 25)],
        [rng.normal(-2, 1, size=n).astype(np.float32) for n in (60, 5)],
    ]
    context = multiprocessing.get_context("spawn")
    queue, port = context.Queue(), free_port()
    processes = [context.Process(target=return_rms_rank_main, args=(rank, port, data, queue)) for rank in range(2)]
    for process in processes:
        process.start()
    results = sorted(queue.get(timeout=120) for _ in processes)
    for process in processes:
        process.join(timeout=60)
    (_, rms0), (_, rms1) = results
    np.testing.assert_array_equal(rms0, rms1)
    everything = np.concatenate([batch for rank_data in data for batch in rank_data]).astype(np.float64)
    np.testing.assert_allclose(rms0, [everything.mean(), everything.var(), 130], rtol=1e-9)


@pytest.mark.parametrize("module_name", list(SETUPS))
def test_two_rank_checkpoint_resumes_as_two_ranks_and_evaluates_alone(module_name, tmp_path, capfd):
    args = tiny_args(module_name, checkpoint_every=1)
    # Ctrl-C reaches rank 1 alone during iteration 2's update: both ranks stop after iteration 2
    first = run_two_ranks(module_name, tmp_path, args, interrupt_rank=1, interrupt_at_call=2 * 2 + 1)
    assert [result[4] for result in first] == [True, True] and [result[3] for result in first] == [256, 256]
    path = tmp_path / "runs" / first[0][5] / "checkpoint.pt"
    # the hint resumes with as many ranks: a plain `python` resume of it is refused
    hints = [line.split("resume with: ")[1] for line in capfd.readouterr().out.splitlines() if "resume with: " in line]
    assert len(hints) == 1 and hints[0].startswith("torchrun --standalone --nproc-per-node 2 "), hints
    assert hints[0].endswith(f"{module_name}.py --resume runs/{first[0][5]}/checkpoint.pt"), hints
    module = importlib.import_module(module_name)
    assert module.load_checkpoint(str(path))["global_step"] == 256

    resumed = run_two_ranks(module_name, tmp_path, {"resume": f"runs/{first[0][5]}/checkpoint.pt", "cuda": False})
    (_, state0, _, step0, _, _), (_, state1, _, step1, _, _) = resumed
    assert step0 == step1 == 512
    assert_same_state(state0, state1)
    steps = [step for step, _ in read_scalars(path.parent)["charts/learning_rate"]]
    assert steps == [128, 256, 384, 512]

    result = run_script(f"{module_name}.py", "--eval-checkpoint", str(path), "--eval-episodes", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "over 2 episodes" in result.stdout


def test_torchrun_launch_writes_one_run_counting_both_ranks(tmp_path):
    flags = ["--env-id", "CartPole-v1", "--num-envs", "2", "--num-steps", "32", "--num-minibatches", "2",
             "--update-epochs", "1", "--total-timesteps", "256", "--no-cuda"]  # fmt: skip
    result = run_script("ppo_discrete.py", *flags, cwd=tmp_path, python_prefix=(
        "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("logs in runs/") == 1  # one console: rank 0's
    scalars = read_scalars(single_run_dir(tmp_path))
    assert [step for step, _ in scalars["charts/SPS"]] == [128, 256]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("ranks, flags", [(1, ["--compile"]), (torch.cuda.device_count() + 1, [])],
                         ids=["nccl-compiled", "gloo-sharing-gpus"])  # fmt: skip
def test_torchrun_launch_on_gpus(ranks, flags, tmp_path):
    """With CUDA, ranks with a GPU each talk over NCCL (here one rank, compiled: the gradient
    all-reduce inside the graph); more ranks than GPUs share them over gloo, as NCCL refuses that."""
    flags = ["--env-id", "CartPole-v1", "--num-envs", "2", "--num-steps", "32", "--num-minibatches", "2",
             "--update-epochs", "1", "--total-timesteps", str(ranks * 128), *flags]  # fmt: skip
    result = run_script("ppo_discrete.py", *flags, cwd=tmp_path, env={"NCCL_DEBUG": "INFO"}, python_prefix=(
        "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks)))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert ("NCCL INFO" in result.stdout + result.stderr) == (ranks == 1)  # NCCL logs only where it runs
    scalars = read_scalars(single_run_dir(tmp_path))
    assert [step for step, _ in scalars["charts/SPS"]] == [ranks * 64, ranks * 128]


def test_single_process_never_touches_torch_distributed(tmp_path, monkeypatch):
    module = importlib.import_module("ppo_discrete")
    monkeypatch.chdir(tmp_path)
    for variable in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(variable, raising=False)

    def refuse(*args, **kwargs):
        raise AssertionError("torch.distributed used outside torchrun")

    monkeypatch.setattr(module.dist, "init_process_group", refuse)
    monkeypatch.setattr(module.dist, "all_reduce", refuse)
    summary = module.train(module.Args(**tiny_args("ppo_discrete")))
    assert summary["global_step"] == 512  # one process: 8 iterations of 2 envs x 32 steps
