"""How close training comes to the raw speed of its environments, timed from outside train().

    python benchmarks/speed.py                          # every config below
    python benchmarks/speed.py cartpole halfcheetah     # some of them
    python benchmarks/speed.py --extra=--compile        # flags added to every config's run

For each config it prints: training steps/s; raw steps/s of the same vector env and wrappers
(`make_envs` of the script) under random actions; their ratio; how the training wall time splits
between env stepping, the rest of the rollout (mostly policy inference and storage) and the rest of
the iteration (GAE, all epochs of minibatch updates, logging); and peak memory (resident set, and
the GPU memory of tensors when used). The script is not changed for this: train() runs as it is,
and this file wraps the envs' step and the functions train() calls once per iteration (compute_gae
after the rollout, Run.progress at the end) to read the clock. Each config runs in a subprocess of
its own, so peak memory is its own. Timings exclude start-up and the first iteration (warm-up, and
compiling with --compile), whose length is printed apart.
"""

import argparse
import importlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

HUMANOID_LARGE_BATCH = (
    "--num-envs 64 --num-steps 64 --update-epochs 2 --num-minibatches 4 --learning-rate 2.95e-3 --no-clip-vloss "
    "--max-grad-norm 3.5 --vf-coef 1.3"
).split()
CONFIGS = {  # name: (module, env flags, iterations to time)
    "cartpole": ("ppo_discrete", ["--env-id", "CartPole-v1"], 60),
    "halfcheetah": ("ppo_continuous", ["--env-id", "HalfCheetah-v4"], 8),
    "humanoid": ("ppo_continuous", ["--env-id", "Humanoid-v4", *HUMANOID_LARGE_BATCH], 5),
    # two envs, one per core: where --async-envs can pay on a 2-core machine
    "humanoid-2envs": ("ppo_continuous", ["--env-id", "Humanoid-v4", "--num-envs", "2", "--num-steps", "1024"], 4),
    # the default batch gathered from more envs at once (benchmarks/results.py trains these "many-envs" rows)
    "cartpole-16envs": ("ppo_discrete", ["--env-id", "CartPole-v1", "--num-envs", "16", "--num-steps", "32"], 60),
    "halfcheetah-8envs": ("ppo_continuous", ["--env-id", "HalfCheetah-v4", "--num-envs", "8", "--num-steps", "256"], 8),
}


def peak_memory_mib() -> dict:
    import torch

    memory = {"rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.cuda.is_initialized():  # the run used the GPU: the most its tensors held (CUDA's own context not counted)
        memory["gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return memory


def measure(name: str, extra: list[str]) -> dict:
    """One config, in this process."""
    import tyro

    module_name, flags, iterations = CONFIGS[name]
    module = importlib.import_module(module_name)
    args = module.validate_args(tyro.cli(module.Args, args=[*flags, *extra, "--no-save-model"]))

    envs = module.make_envs(args)  # the raw env speed: same vector env and wrappers, random actions
    envs.reset(seed=0)
    envs.action_space.seed(0)
    raw_steps = max(2000, 4 * args.num_envs) // args.num_envs
    random_actions = [envs.action_space.sample() for _ in range(raw_steps)]  # drawn before the clock starts
    start = time.perf_counter()
    for action in random_actions:
        envs.step(action)
    raw_sps = raw_steps * args.num_envs / (time.perf_counter() - start)
    envs.close()

    # the clock, read from outside: env steps, the end of each rollout, the end of each iteration
    clock = {"env": 0.0, "rollout_end": [], "iteration_end": [], "steps": []}
    real_make_envs, real_gae, real_progress = module.make_envs, module.compute_gae, module.Run.progress

    def timed_make_envs(*make_args, **make_kwargs):
        timed_envs = real_make_envs(*make_args, **make_kwargs)
        real_step = timed_envs.step

        def step(actions):
            step_start = time.perf_counter()
            result = real_step(actions)
            clock["env"] += time.perf_counter() - step_start
            return result

        timed_envs.step = step
        return timed_envs

    def timed_gae(*gae_args, **gae_kwargs):
        clock["rollout_end"].append((time.perf_counter(), clock["env"]))
        return real_gae(*gae_args, **gae_kwargs)

    def timed_progress(run, global_step, *progress_args):
        clock["iteration_end"].append(time.perf_counter())
        clock["steps"].append(global_step)
        return real_progress(run, global_step, *progress_args)

    module.make_envs, module.compute_gae, module.Run.progress = timed_make_envs, timed_gae, timed_progress
    args.total_timesteps = (iterations + 1) * args.batch_size
    start = time.perf_counter()
    module.train(args)
    # iterations 2 and on: each from the previous iteration's end to its own
    ends, rollouts = clock["iteration_end"], clock["rollout_end"]
    total = ends[-1] - ends[0]
    env = rollouts[-1][1] - rollouts[0][1]  # the env time of iterations 2 and on
    rollout = sum(rollouts[i][0] - ends[i - 1] for i in range(1, len(ends)))
    return {
        "config": name,
        "flags": " ".join([*flags, *extra]),
        "train_sps": (clock["steps"][-1] - clock["steps"][0]) / total,
        "first_iteration_s": ends[0] - start,
        "raw_sps": raw_sps,
        "env_s": env,
        "rollout_other_s": rollout - env,
        "update_s": total - rollout,
        "total_s": total,
        **peak_memory_mib(),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="*", help=f"some of: {' '.join(CONFIGS)} (default: all)")
    parser.add_argument("--extra", default="", help="flags added to every run, e.g. --extra=--compile")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # run one config and print its JSON
    options = parser.parse_args()
    extra = options.extra.split()
    unknown = [name for name in options.configs if name not in CONFIGS]
    if unknown:
        parser.error(f"unknown config {' '.join(unknown)}; choose from {' '.join(CONFIGS)}")
    options.configs = options.configs or list(CONFIGS)
    if options.one:
        print("RESULT " + json.dumps(measure(options.one, extra)), flush=True)
        return
    print(
        "| config | train steps/s | raw env steps/s | ratio | env | rollout other | update | peak RSS | 1st iteration |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name in options.configs:
        with tempfile.TemporaryDirectory() as workdir:  # the run's logs go there
            result = subprocess.run([sys.executable, __file__, "--one", name, f"--extra={options.extra}"],
                                    capture_output=True, text=True, cwd=workdir)  # fmt: skip
        if result.returncode != 0:  # e.g. the script's one-line error for a bad --extra flag
            errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
            raise SystemExit(f"{name} failed: {errors[-1] if errors else result.stderr[-3000:]}")
        output = result.stdout
        r = json.loads(next(line for line in output.splitlines() if line.startswith("RESULT "))[len("RESULT ") :])
        share = {key: 100 * r[key] / r["total_s"] for key in ("env_s", "rollout_other_s", "update_s")}
        memory = f"{r['rss_mib']:,.0f} MiB" + (f" (GPU tensors {r['gpu_mib']:,.0f} MiB)" if "gpu_mib" in r else "")
        print(
            f"| {name} | {r['train_sps']:,.0f} | {r['raw_sps']:,.0f} | {r['train_sps'] / r['raw_sps']:.0%} | "
            f"{share['env_s']:.0f}% | {share['rollout_other_s']:.0f}% | {share['update_s']:.0f}% | {memory} | "
            f"{r['first_iteration_s']:.1f} s |",
            flush=True,
        )


if __name__ == "__main__":
    main()
