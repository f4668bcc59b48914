# PPO for continuous (Box) action spaces, e.g. MuJoCo locomotion. One self-contained file:
# copy it to start your own research. Docs: README.md; the details follow Huang et al.,
# "The 37 Implementation Details of Proximal Policy Optimization" (ICLR blog track, 2022).
import ast
import contextlib
import dataclasses
import importlib
import inspect
import math
import os
import pickle
import random
import re
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass

if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
    os.environ.setdefault("MUJOCO_GL", "egl")  # headless MuJoCo rendering, unless the user chose
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # pygame (CartPole...) renders off-screen without the
    # error line SDL prints while it looks for a display ("error: XDG_RUNTIME_DIR is invalid or not set")

import gymnasium as gym
import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import tyro
from torch.distributions.normal import Normal
from torch.optim.adam import adam  # torch.optim.Adam's step as a function, for --compile
from torch.utils.tensorboard import SummaryWriter


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment"""
    seed: int = 1
    """seed of the experiment"""
    torch_deterministic: bool = True
    """if toggled, `torch.backends.cudnn.deterministic=True`"""
    cuda: bool = True
    """if toggled, use CUDA when available (falls back to CPU with a notice)"""
    torch_threads: int = 1
    """CPU threads for torch; one is fastest for small MLPs"""
    compile: bool = False
    """torch.compile the rollout policy and the whole minibatch update (gradients, clipping, Adam) into one graph each; compiling takes seconds at the start"""
    cudagraphs: bool = False
    """with --compile on a GPU: replay each compiled graph as one CUDA graph (torch.compile's mode="reduce-overhead"), one launch instead of one per kernel; not yet run on a GPU here"""
    async_envs: bool = False
    """step the envs in subprocesses (gymnasium's AsyncVectorEnv), one per env: pays when steps are slow and cores spare"""
    track: bool = False
    """if toggled, this experiment will be tracked with Weights and Biases (mirrors the TensorBoard logs; needs `pip install wandb`)"""
    wandb_project_name: str = "cleanRL"
    """the wandb's project name"""
    wandb_entity: str | None = None
    """the entity (team) of wandb's project"""
    capture_video: bool = False
    """whether to capture videos of the agent (sub-env 0) to the `videos/{run_name}` folder"""
    backend: str | None = None
    """torch.distributed backend under torchrun: gloo (CPU) or nccl (GPU); default: nccl with --cuda and a GPU per rank, else gloo"""

    # Algorithm specific arguments
    env_id: str = "HalfCheetah-v4"
    """the id of the environment: any registered gymnasium id, `module:EnvName-v0`, or `dm_control/DOMAIN-TASK-v0`"""
    env_kwargs: tuple[str, ...] = ()
    """keyword arguments for gym.make as key=value pairs, e.g. xml_file=robot.xml frame_skip=4"""
    total_timesteps: int = 1000000
    """total timesteps of the experiments"""
    learning_rate: float = 3e-4
    """the learning rate of the optimizer"""
    num_envs: int = 1
    """the number of parallel game environments (per rank under torchrun)"""
    num_steps: int = 2048
    """the number of steps to run in each environment per policy rollout"""
    anneal_lr: bool = True
    """Toggle learning rate annealing for policy and value networks"""
    gamma: float = 0.99
    """the discount factor gamma"""
    gae_lambda: float = 0.95
    """the lambda for the general advantage estimation"""
    num_minibatches: int = 32
    """the number of mini-batches"""
    update_epochs: int = 10
    """the K epochs to update the policy"""
    norm_adv: bool = True
    """Toggles advantages normalization"""
    clip_coef: float = 0.2
    """the surrogate clipping coefficient"""
    clip_vloss: bool = True
    """Toggles whether or not to use a clipped loss for the value function, as per the paper."""
    ent_coef: float = 0.0
    """coefficient of the entropy"""
    vf_coef: float = 0.5
    """coefficient of the value function"""
    max_grad_norm: float = 0.5
    """the maximum norm for the gradient clipping"""
    target_kl: float | None = None
    """the target KL divergence threshold"""
    bootstrap_truncated: bool = True
    """bootstrap from the value of the final observation when an episode is cut by its time limit (off: treat it as terminal, like CleanRL)"""
    norm_obs: bool = True
    """normalize observations with running mean/std and clip them to [-clip-obs, clip-obs]"""
    clip_obs: float = 10.0
    """the clip range of normalized observations"""
    norm_reward: bool = True
    """scale rewards by the running std of the discounted return and clip them to [-clip-reward, clip-reward]"""
    clip_reward: float = 10.0
    """the clip range of scaled rewards"""
    rescale_actions: bool = False
    """map the policy's [-1, 1] onto the env's action bounds (off: sample freely and clip to the bounds, like CleanRL)"""

    # Checkpoints and evaluation
    save_model: bool = False
    """save a checkpoint at the end of training, in runs/{run_name}/checkpoint.pt"""
    checkpoint_every: int = 0
    """also update runs/{run_name}/checkpoint.pt every N iterations (0: off)"""
    resume: str | None = None
    """continue the run saved in this checkpoint, in its run directory, with its saved flags (except --cuda, --compile, --cudagraphs, --torch-threads, --async-envs, --track, --capture-video, --backend)"""
    init_from: str | None = None
    """start a new run from this checkpoint's weights and normalization statistics (fine-tuning)"""
    eval_every: int = 0
    """evaluate every N iterations on a separate env with frozen normalization, keeping runs/{run_name}/best.pt (0: off)"""
    eval_episodes: int = 10
    """the number of episodes of each evaluation"""
    eval_stochastic: bool = False
    """sample actions when evaluating (default: the deterministic mean action)"""
    eval_max_episode_steps: int = 10_000
    """evaluation cuts an episode at this many steps where the env has no time limit of its own (as registered), so that an episode that never ends cannot stall the run"""
    eval_checkpoint: str | None = None
    """evaluate this checkpoint (on the env and with the env flags it was trained with) for --eval-episodes episodes, print mean and std, and exit without training"""

    # to be filled in runtime, from the flags above (so not flags themselves)
    batch_size: tyro.conf.Suppress[int] = 0
    """the batch size, all ranks together (computed in runtime)"""
    minibatch_size: tyro.conf.Suppress[int] = 0
    """the mini-batch size, all ranks together (computed in runtime)"""
    num_iterations: tyro.conf.Suppress[int] = 0
    """the number of iterations (computed in runtime)"""


def fail(message: str):
    """Stop with a one-line error for the user instead of a traceback."""
    raise SystemExit(f"error: {message}")


def absolute_model_path(env_kwargs: tuple[str, ...]) -> tuple[str, ...]:
    """A model file given relative to here is stored absolute, so resuming or evaluating elsewhere finds it."""
    return tuple(
        f"xml_file={os.path.abspath(pair[len('xml_file='):])}"
        if pair.startswith("xml_file=") and os.path.exists(pair[len("xml_file="):]) else pair
        for pair in env_kwargs
    )


def validate_args(args: Args) -> Args:
    """Check impossible settings once, right after parsing, and fill in the derived sizes."""
    for name, value in vars(args).items():  # nan would pass every range check below
        if isinstance(value, float) and np.isnan(value):
            fail(f"--{name.replace('_', '-')} must be a number, got nan")
    for name in ("num_envs", "num_steps", "num_minibatches", "update_epochs", "total_timesteps", "torch_threads",
                 "eval_episodes", "eval_max_episode_steps"):  # fmt: skip
        if getattr(args, name) < 1:
            fail(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    for name in ("checkpoint_every", "eval_every"):
        if getattr(args, name) < 0:
            fail(f"--{name.replace('_', '-')} must be 0 (off) or more, got {getattr(args, name)}")
    for name in ("gamma", "gae_lambda"):
        if not 0 <= getattr(args, name) <= 1:
            fail(f"--{name.replace('_', '-')} must be between 0 and 1, got {getattr(args, name)}")
    for name in ("learning_rate", "vf_coef"):
        if getattr(args, name) < 0:
            fail(f"--{name.replace('_', '-')} must be 0 or more, got {getattr(args, name)}")
    for name in ("clip_coef", "max_grad_norm", "clip_obs", "clip_reward", "target_kl"):
        if getattr(args, name) is not None and getattr(args, name) <= 0:  # target_kl: None is off
            fail(f"--{name.replace('_', '-')} must be above 0, got {getattr(args, name)}")
    if not 0 <= args.seed < 2**31:  # numpy's and gymnasium's seeds are 0 to 2**32 - 1; evaluation adds to it
        fail(f"--seed must be between 0 and {2**31 - 1:,}, got {args.seed}")
    if args.resume and args.init_from:
        fail("--resume continues a run and --init-from starts a new one; pass only one of them")
    if args.eval_checkpoint and args.track:
        fail("--eval-checkpoint prints its result and logs nothing; drop --track")
    if args.eval_checkpoint and (args.resume or args.init_from):
        fail("--eval-checkpoint evaluates a saved policy and trains nothing; drop --resume and --init-from")
    if args.async_envs and args.capture_video:  # a worker process cannot film (no frames are written)
        fail("--capture-video films sub-env 0 in this process, which --async-envs moves out; drop one of the two")
    args.env_kwargs = absolute_model_path(args.env_kwargs)
    rank_batch_size = args.num_envs * args.num_steps
    if rank_batch_size % args.num_minibatches != 0:
        fail(
            f"--num-envs x --num-steps = {rank_batch_size} does not divide into --num-minibatches "
            f"{args.num_minibatches}; choose a --num-minibatches that divides {rank_batch_size}"
        )
    world_size = int(os.environ.get("WORLD_SIZE", 1))  # set by torchrun
    args.batch_size = rank_batch_size * world_size
    args.minibatch_size = args.batch_size // args.num_minibatches
    args.num_iterations = args.total_timesteps // args.batch_size
    if args.num_iterations == 0:
        fail(
            f"--total-timesteps {args.total_timesteps} is less than one batch "
            f"(--num-envs x --num-steps x ranks = {args.batch_size}), so no iteration would run; "
            f"raise --total-timesteps or lower --num-steps"
        )
    if args.cudagraphs and not args.compile:
        fail("--cudagraphs replays the graphs that --compile makes; add --compile")
    if args.cudagraphs and world_size > 1:
        fail("--cudagraphs is not supported under torchrun yet (the all-reduce inside a CUDA graph is untested); drop it")
    if args.cudagraphs and not (args.cuda and torch.cuda.is_available()):
        fail("--cudagraphs needs CUDA (a GPU torch can use, and --cuda); drop it to run on CPU (--compile works there)")
    if args.backend not in (None, "gloo", "nccl"):
        fail(f"--backend must be gloo or nccl, got {args.backend!r}")
    if args.backend == "nccl" and world_size > 1 and not (args.cuda and torch.cuda.is_available()):
        fail("--backend nccl needs CUDA (a GPU torch can use, and --cuda); use --backend gloo on CPU")
    local_ranks, gpus = int(os.environ.get("LOCAL_WORLD_SIZE", 1)), torch.cuda.device_count()
    if args.backend == "nccl" and world_size > 1 and gpus < local_ranks:  # NCCL refuses two ranks on one GPU
        fail(f"--backend nccl needs a GPU per rank, but this machine runs {local_ranks} ranks on {gpus} GPU(s); "
             "start fewer ranks, or drop --backend to let them share the GPUs over gloo")  # fmt: skip
    if args.track:
        try:
            import wandb  # noqa: F401
        except ImportError:
            fail("--track logs to Weights & Biases, which needs wandb: `pip install wandb`, or run without --track")
    if args.capture_video:
        try:
            import moviepy  # noqa: F401
        except ImportError:
            fail("--capture-video needs moviepy: `pip install moviepy`, or run without --capture-video")
    return args


# ---------------------------------------------------------------------------------------------
# Environments


def parse_env_kwargs(pairs) -> dict:
    """`key=value` pairs for gym.make; values are Python literals where they parse (5, 0.1, True)."""
    kwargs = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"--env-kwargs takes key=value pairs, got {pair!r}")
        try:
            kwargs[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError, TypeError):
            kwargs[key] = value
        if key == "xml_file" and os.path.exists(value):
            kwargs[key] = os.path.abspath(value)  # gymnasium reads other relative paths from its own assets
        elif key == "xml_file" and os.sep in value and not os.path.isabs(value):  # not a file of gymnasium's assets
            fail(f"--env-kwargs xml_file={value}: no such file here ({os.getcwd()}); give the path of a MuJoCo XML file")
    return kwargs


def check_env_id(env_id: str):
    """Stop early, with a hint, when gymnasium cannot find the env."""
    name = env_id
    if ":" in env_id:  # `module:EnvName-v0`: importing the module registers the env
        module_name, name = env_id.split(":", 1)
        try:
            importlib.import_module(module_name)
        except ImportError as error:
            fail(f"--env-id {env_id!r}: cannot import module {module_name!r} ({error}); put it on PYTHONPATH")
    if name.startswith("dm_control/"):
        try:
            import shimmy  # noqa: F401  registers the dm_control/ ids
        except ImportError:
            fail(f"--env-id {env_id!r} needs shimmy and dm_control: pip install 'shimmy[dm-control]'")
    try:
        gym.spec(name)
    except gym.error.Error as error:
        fail(f"unknown --env-id {env_id!r}: {error} Pass a registered gymnasium id, e.g. HalfCheetah-v4")


def is_image(space) -> bool:
    return isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and len(space.shape) in (2, 3)


def check_spaces(env, env_id: str):
    """Refuse, before any training, spaces that this agent cannot handle."""
    obs_space, action_space = env.observation_space, env.action_space
    parts = list(obs_space.spaces.values()) if isinstance(obs_space, gym.spaces.Dict) else [obs_space]
    if any(is_image(part) for part in parts):
        fail(f"{env_id} has image observations {obs_space}; these MLP agents take vectors: use a CNN agent "
             f"(e.g. CleanRL's ppo_atari.py) or wrap the env to give feature vectors")  # fmt: skip
    try:
        flat_space = gym.spaces.flatten_space(obs_space)
    except NotImplementedError:
        flat_space = None
    if not isinstance(flat_space, gym.spaces.Box):  # e.g. Sequence or Graph: no fixed size
        fail(f"{env_id} has observation space {obs_space}, which cannot be flattened into a vector; "
             f"wrap the env to give a Box, Dict or Tuple of Boxes")  # fmt: skip
    if not isinstance(action_space, gym.spaces.Box):
        hint = ("use ppo_discrete.py for it" if isinstance(action_space, (gym.spaces.Discrete, gym.spaces.MultiDiscrete))
                else "these scripts take Box (ppo_continuous.py) or Discrete/MultiDiscrete (ppo_discrete.py) actions; wrap the env's actions into one of those")  # fmt: skip
        fail(f"ppo_continuous.py needs a Box (continuous) action space, but {env_id} has {action_space}; {hint}")
    if len(action_space.shape) != 1:
        fail(f"{env_id} has {len(action_space.shape)}-D actions {action_space}; wrap the env to take a flat vector of actions")


def check_env_kwargs(env, env_id: str, env_kwargs: dict):
    """A value that cannot be what the env's constructor defaults to (`g=abc`, `frame_skip=2.5`) would fail only
    at some step: refuse it now. None passes (some envs take None for a number)."""
    defaults = {name: parameter.default for name, parameter in inspect.signature(type(env.unwrapped)).parameters.items()}
    fits = {bool: (bool, int), int: (int,), float: (int, float)}  # an int is a fine float, 0 or 1 a fine flag
    for key, value in env_kwargs.items():
        expected = type(defaults.get(key))
        if expected in fits and value is not None and not isinstance(value, fits[expected]):
            fail(f"--env-kwargs {key}={value}: {env_id} takes {'an' if expected is int else 'a'} {expected.__name__} "
                 f"for {key} (its default: {key}={defaults[key]})")  # fmt: skip


VIDEO_MAX_FRAMES = 1000  # frames of a video from an env registered without a time limit


def make_env(env_id: str, idx: int, env_kwargs: dict, video_folder: str | None = None, video_trigger=None,
             trainer_pid: int | None = None, eval_time_limit: int | None = None):
    def thunk():
        if trainer_pid is not None and os.getpid() != trainer_pid:  # an --async-envs worker: Ctrl-C and SIGTERM
            for sig in (signal.SIGINT, signal.SIGTERM):  # (sent to the whole process group) are for the trainer to
                signal.signal(sig, signal.SIG_IGN)  # handle: finish the iteration, save, then close the workers
        film = video_folder is not None and idx == 0  # film sub-env 0 alone: the vector RecordVideo renders all
        env = gym.make(env_id, **({**env_kwargs, "render_mode": "rgb_array"} if film else env_kwargs))
        registered_limit = getattr(env.spec, "max_episode_steps", None)  # None: episodes may never end
        if eval_time_limit is not None and registered_limit is None:
            env = gym.wrappers.TimeLimit(env, eval_time_limit)  # evaluation waits for every episode to end: one
            if idx == 0:  # that never ends would stall the run
                print(f"notice: {env_id} is registered without a time limit; evaluation cuts an episode that has not "
                      f"ended at {eval_time_limit:,} steps (--eval-max-episode-steps)", flush=True)  # fmt: skip
        if idx == 0:
            check_spaces(env, env_id)
            check_env_kwargs(env, env_id, env_kwargs)
        if film:  # frames stay in memory until the video is written: where an episode may never end, a video holds
            length = 0 if registered_limit is not None else VIDEO_MAX_FRAMES  # its first frames (0: whole episodes)
            env = gym.wrappers.RecordVideo(env, video_folder, episode_trigger=video_trigger, video_length=length)
        if not (isinstance(env.observation_space, gym.spaces.Box) and len(env.observation_space.shape) == 1):
            env = gym.wrappers.FlattenObservation(env)  # Dict, Tuple, Discrete, 2-D Box... -> one flat vector
        return env

    return thunk


def make_envs(args: Args, num_envs: int | None = None, video_folder: str | None = None, video_trigger=None,
              eval_time_limit: int | None = None):
    """Vector env with CleanRL's wrapper stack, in gymnasium 1.x's NEXT_STEP autoreset mode."""
    num_envs = args.num_envs if num_envs is None else num_envs
    check_env_id(args.env_id)
    env_kwargs = parse_env_kwargs(args.env_kwargs)
    try:
        vector_env = gym.vector.AsyncVectorEnv if args.async_envs else gym.vector.SyncVectorEnv
        trainer_pid = os.getpid() if args.async_envs else None
        envs = vector_env(  # detail 1: vectorized envs
            [make_env(args.env_id, i, env_kwargs, video_folder, video_trigger, trainer_pid, eval_time_limit)
             for i in range(num_envs)],
            autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP,
        )
    except (ImportError, gym.error.Error) as error:  # a missing extra (e.g. Box2D) or a retired env version
        fail(f"cannot make {args.env_id}: {str(error).strip().splitlines()[0]}")
    except (TypeError, ValueError, OSError) as error:
        if not env_kwargs:
            raise
        fail(f"cannot make {args.env_id} with --env-kwargs {' '.join(args.env_kwargs)}: {error}")
    envs = gym.wrappers.vector.RecordEpisodeStatistics(envs)  # raw returns, before any scaling
    if args.rescale_actions:
        space = envs.single_action_space
        if not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
            envs.close()
            fail(f"--rescale-actions needs finite action bounds, but {args.env_id} has {space}")
        envs = gym.wrappers.vector.RescaleAction(envs, -1.0, 1.0)  # the policy acts in [-1, 1]
    envs = gym.wrappers.vector.ClipAction(envs)  # continuous detail 5: the env gets the clipped action
    if args.norm_obs:
        envs = gym.wrappers.vector.NormalizeObservation(envs)  # continuous detail 6
        envs = gym.wrappers.vector.TransformObservation(  # continuous detail 7
            envs, lambda obs: np.clip(obs, -args.clip_obs, args.clip_obs), envs.observation_space
        )
    if args.norm_reward:
        envs = gym.wrappers.vector.NormalizeReward(envs, gamma=args.gamma)  # continuous detail 8
        envs = gym.wrappers.vector.TransformReward(  # continuous detail 9
            envs, lambda reward: np.clip(reward, -args.clip_reward, args.clip_reward)
        )
    return envs


def check_video_support(args: Args):
    """Render one frame up front, so a missing renderer is a clear error and not a crash mid-run."""
    env_id = args.env_id
    check_env_id(env_id)
    try:
        env = gym.make(env_id, render_mode="rgb_array", **parse_env_kwargs(args.env_kwargs))
        env.reset(seed=0)
        frame = env.render()
        env.close()
    except Exception as error:  # any renderer failure (no GL, no pygame) ends the same way
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if args.env_kwargs and isinstance(error, (TypeError, ValueError)):  # the env's keywords, not the renderer
            fail(f"cannot make {env_id} with --env-kwargs {' '.join(args.env_kwargs)}: {first_line}")
        fail(
            f"--capture-video cannot render {env_id}: {first_line}. On a headless machine set "
            f"MUJOCO_GL=egl (or osmesa); or run without --capture-video"
        )
    if frame is None or np.asarray(frame).ndim != 3:
        fail(f"--capture-video: {env_id} does not render rgb_array frames; run without --capture-video")


# ---------------------------------------------------------------------------------------------
# Agent


def layer_init(layer, std=np.sqrt(2), bias_const=0.0):
    torch.nn.init.orthogonal_(layer.weight, std)  # detail 2: orthogonal init, zero bias
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


class Agent(nn.Module):
    def __init__(self, obs_dim: int, action_dim: int):
        super().__init__()
        # continuous detail 4 and detail 13: separate 64-64 tanh MLPs for critic and actor
        self.critic = nn.Sequential(
            layer_init(nn.Linear(obs_dim, 64)),
            nn.Tanh(),
            layer_init(nn.Linear(64, 64)),
            nn.Tanh(),
            layer_init(nn.Linear(64, 1), std=1.0),
        )
        self.actor_mean = nn.Sequential(
            layer_init(nn.Linear(obs_dim, 64)),
            nn.Tanh(),
            layer_init(nn.Linear(64, 64)),
            nn.Tanh(),
            layer_init(nn.Linear(64, action_dim), std=0.01),
        )
        self.actor_logstd = nn.Parameter(torch.zeros(1, action_dim))  # continuous detail 2: state-independent log std

    def get_value(self, x):
        return self.critic(x)

    def get_action_and_value(self, x, action=None):
        action_mean = self.actor_mean(x)
        action_std = self.actor_logstd.expand_as(action_mean).exp()
        probs = Normal(action_mean, action_std, validate_args=False)  # continuous detail 1; validation costs ~20% of a call
        if action is None:
            action = probs.sample()
        # continuous detail 3: independent action dimensions, log-probs summed
        return action, probs.log_prob(action).sum(1), probs.entropy().sum(1), self.critic(x)

    forward = get_action_and_value  # agent(x, action): the call torch.func.functional_call makes

    def sample_action_and_value(self, x):
        """The rollout's call, for a [num_envs, obs_dim] batch under torch.inference_mode(): what
        get_action_and_value(x) returns, bar the entropy, with the same numbers from the same random
        draws, but written out: no distribution object, ~30% cheaper per step (benchmarks/overhead.py).
        A test checks that the two agree; change both if you change the policy."""
        action_mean = self.actor_mean(x)
        action_std = self.actor_logstd.expand_as(action_mean).exp()
        action = action_mean + action_std * torch.randn_like(action_mean)  # what Normal.sample() draws
        logprob = (-((action - action_mean) ** 2) / (2 * action_std**2) - action_std.log()
                   - math.log(math.sqrt(2 * math.pi)))  # what Normal.log_prob() computes, in its order
        return action, logprob.sum(1), self.critic(x)  # continuous detail 3: log-probs summed

    def act(self, x, deterministic: bool = True):
        """The action to evaluate with: the mean action, or a sample."""
        return self.actor_mean(x) if deterministic else self.get_action_and_value(x)[0]


# ---------------------------------------------------------------------------------------------
# Pure helpers: GAE and the PPO loss


def compute_gae(rewards, values, next_value, terminations, truncations, valid, gamma, gae_lambda, bootstrap_truncated):
    """Advantages and returns for a [num_steps, num_envs] rollout (detail 5).

    values[t] is V(obs[t]) and next_value is V of the observation after the last step. In NEXT_STEP
    autoreset mode the observation after an episode's last step is its true final observation, so
    values[t + 1] (or next_value) is exactly the value to bootstrap from when step t was truncated.
    The step after an episode end only resets its env (valid is 0 there): it gets zero advantage.
    """
    num_steps = rewards.shape[0]
    episode_end = torch.maximum(terminations, truncations)
    no_bootstrap = terminations if bootstrap_truncated else episode_end
    # the TD errors and the decay factors for every step at once; only the recursion below is sequential
    next_values = torch.cat([values[1:], next_value.reshape(1, -1)])
    deltas = rewards + gamma * next_values * (1.0 - no_bootstrap) - values
    decays = gamma * gae_lambda * (1.0 - episode_end)
    advantages = torch.zeros_like(rewards)
    lastgaelam = torch.zeros_like(next_value)
    for t in reversed(range(num_steps)):
        lastgaelam = (deltas[t] + decays[t] * lastgaelam) * valid[t]
        advantages[t] = lastgaelam
    return advantages, advantages + values


def masked_mean(x, mask, count):
    """Mean of x over the transitions where mask is 1; count is mask.sum().clamp(min=1.0), computed once."""
    return (x * mask).sum() / count


def ppo_loss(newlogprob, entropy, newvalue, logprobs, advantages, returns, values, mask, args: Args):
    """Clipped PPO loss over one minibatch; `mask` (1 or 0) drops the autoreset transitions.

    Returns the loss and a tensor of debug scalars: policy loss, value loss, entropy,
    old_approx_kl, approx_kl, clipfrac (detail 12).
    """
    num_valid = mask.sum()
    count = num_valid.clamp(min=1.0)
    logratio = newlogprob - logprobs
    ratio = logratio.exp()
    with torch.no_grad():
        old_approx_kl = masked_mean(-logratio, mask, count)
        approx_kl = masked_mean((ratio - 1) - logratio, mask, count)
        clipfrac = masked_mean(((ratio - 1.0).abs() > args.clip_coef).float(), mask, count)

    if args.norm_adv:  # detail 7: per-minibatch advantage normalization, over real transitions only
        adv_mean = masked_mean(advantages, mask, count)
        adv_var = ((advantages - adv_mean) ** 2 * mask).sum() / (num_valid - 1).clamp(min=1.0)
        advantages = (advantages - adv_mean) / (adv_var.sqrt() + 1e-8)

    # detail 8: clipped surrogate objective
    pg_loss1 = -advantages * ratio
    pg_loss2 = -advantages * torch.clamp(ratio, 1 - args.clip_coef, 1 + args.clip_coef)
    pg_loss = masked_mean(torch.max(pg_loss1, pg_loss2), mask, count)

    newvalue = newvalue.view(-1)
    if args.clip_vloss:  # detail 9: clipped value loss
        v_loss_unclipped = (newvalue - returns) ** 2
        v_clipped = values + torch.clamp(newvalue - values, -args.clip_coef, args.clip_coef)
        v_loss_clipped = (v_clipped - returns) ** 2
        v_loss = 0.5 * masked_mean(torch.max(v_loss_unclipped, v_loss_clipped), mask, count)
    else:
        v_loss = 0.5 * masked_mean((newvalue - returns) ** 2, mask, count)

    entropy_loss = masked_mean(entropy, mask, count)
    loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef  # detail 10
    stats = torch.stack([pg_loss, v_loss, entropy_loss, old_approx_kl, approx_kl, clipfrac]).detach()
    return loss, stats


def explained_variance(y_pred, y_true):
    var_y = y_true.var()
    return float("nan") if var_y == 0 else (1 - (y_true - y_pred).var() / var_y).item()


# ---------------------------------------------------------------------------------------------
# Normalization statistics, evaluation and checkpoints


NORMALIZERS = [  # (checkpoint key, gymnasium wrapper, its RunningMeanStd attribute)
    ("obs_rms", gym.wrappers.vector.NormalizeObservation, "obs_rms"),
    ("return_rms", gym.wrappers.vector.NormalizeReward, "return_rms"),
]


def find_wrapper(envs, wrapper_type):
    while isinstance(envs, gym.vector.VectorWrapper):
        if isinstance(envs, wrapper_type):
            return envs
        envs = envs.env
    return None


def get_normalization(envs) -> dict:
    """The running statistics of the observation and reward normalizers, as tensors."""
    state = {}
    for key, wrapper_type, attribute in NORMALIZERS:
        wrapper = find_wrapper(envs, wrapper_type)
        if wrapper is not None:
            rms = getattr(wrapper, attribute)
            state[key] = {"mean": torch.tensor(rms.mean), "var": torch.tensor(rms.var), "count": float(rms.count)}
    return state


def set_normalization(envs, state: dict, freeze: bool = False):
    """Copy running statistics into envs' normalizers; `freeze` stops them from updating."""
    for key, wrapper_type, attribute in NORMALIZERS:
        wrapper = find_wrapper(envs, wrapper_type)
        if wrapper is not None and key in state:
            rms = getattr(wrapper, attribute)
            rms.mean = state[key]["mean"].cpu().numpy().copy()  # the saved dtype: no precision lost
            rms.var = state[key]["var"].cpu().numpy().copy()
            rms.count = state[key]["count"]
        if wrapper is not None and freeze:
            wrapper.update_running_mean = False


EVAL_SEED_OFFSET = 100_000  # evaluation episodes are seeded from --seed + this, apart from the training envs'


def evaluate(agent, envs, deterministic: bool, seed: int, device) -> np.ndarray:
    """Play one episode in every sub-env of `envs`; returns their raw returns.

    `envs` should have frozen normalization (see `set_normalization`), so that evaluating
    changes no statistics."""
    next_obs, _ = envs.reset(seed=seed)
    returns, finished = np.zeros(envs.num_envs), np.zeros(envs.num_envs, dtype=bool)
    while not finished.all():
        with torch.no_grad():
            action = agent.act(torch.as_tensor(next_obs, dtype=torch.float32, device=device), deterministic)
        next_obs, _, _, _, infos = envs.step(action.cpu().numpy())
        if "episode" in infos:
            first = infos["_episode"] & ~finished  # count each sub-env's first episode only
            returns[first] = infos["episode"]["r"][first]
            finished |= first
    return returns


SCRIPT = "ppo_continuous"


def get_rng_state() -> dict:
    np_rng = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],  # a CPU run starts no CUDA
        "numpy": [np_rng[0], torch.from_numpy(np_rng[1].astype(np.int64)), *np_rng[2:]],
        "python": random.getstate(),
    }


def set_rng_state(state: dict):
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():  # as many GPUs as both machines have
        torch.cuda.set_rng_state_all(state["cuda"][: torch.cuda.device_count()])
    np.random.set_state((state["numpy"][0], state["numpy"][1].numpy().astype(np.uint32), *state["numpy"][2:]))
    random.setstate(state["python"])


def claim_run_dir(run_name: str) -> str:
    """Create runs/{run_name} and return the name, or runs/{run_name}-2, -3, ... when that folder exists: runs of
    one name started in the same second (a sweep launched at once) never share a folder, as mkdir is atomic."""
    os.makedirs("runs", exist_ok=True)
    number = 1
    while True:
        name = run_name if number == 1 else f"{run_name}-{number}"
        try:
            os.mkdir(f"runs/{name}")
            return name
        except FileExistsError:
            number += 1


def save_checkpoint(path: str, agent, optimizer, envs, args: Args, run_name: str, global_step: int,
                    iteration: int, best_eval_return: float | None):  # fmt: skip
    """Everything a run needs to continue. Written atomically: a crash mid-write leaves the
    previous file intact. Holds only tensors and plain Python values, so it loads with
    `torch.load(weights_only=True)`, which cannot run code from the file."""
    checkpoint = {
        "script": SCRIPT,
        "run_name": run_name,
        "args": vars(args),
        "observation_shape": list(envs.single_observation_space.shape),
        "action_shape": list(envs.single_action_space.shape),
        "global_step": global_step,
        "iteration": iteration,
        "best_eval_return": best_eval_return,
        "agent": agent.state_dict(),
        "optimizer": optimizer.state_dict(),
        "normalization": get_normalization(envs),
        "rng": get_rng_state(),
    }
    tmp_path = f"{path}.tmp"
    try:
        with open(tmp_path, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)  # atomic on POSIX and Windows
    except BaseException as error:  # a full disk, a read-only folder, a second Ctrl-C: the file written before
        with contextlib.suppress(OSError):  # stays as it was, and the partial one, which would only hold on to the
            os.remove(tmp_path)  # space, goes
        if not isinstance(error, (OSError, RuntimeError)):  # torch's zip writer reports some failures as RuntimeError
            raise
        reason = getattr(error, "strerror", None) or (str(error).strip() or type(error).__name__).splitlines()[0]
        fail(f"cannot write {path} ({reason}); the file written there before, if any, is intact: free disk space "
             f"or fix the folder's permissions")  # fmt: skip


CHECKPOINT_KEYS = ("script", "run_name", "args", "observation_shape", "action_shape", "global_step", "iteration",
                   "best_eval_return", "agent", "optimizer", "normalization", "rng")  # what save_checkpoint writes


def load_checkpoint(path: str) -> dict:
    """Load a checkpoint safely (on the CPU; load_state_dict moves tensors to the model's device),
    or stop with a one-line error naming the problem."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        fail(f"checkpoint {path} does not exist; pass a checkpoint file, e.g. runs/{{run_name}}/checkpoint.pt")
    except IsADirectoryError:
        fail(f"checkpoint {path} is a directory; pass a checkpoint file in it, e.g. {os.path.join(path, 'checkpoint.pt')}")
    except pickle.UnpicklingError as error:
        if "global" in str(error).lower():  # weights_only met a class or function it will not import
            fail(f"checkpoint {path} was refused: it holds pickled objects that could run code when loaded; "
                 f"use a checkpoint written by this script")  # fmt: skip
        fail(f"checkpoint {path} is corrupt or not a checkpoint; use another checkpoint (e.g. best.pt)")
    except Exception as error:  # truncated or damaged archives raise assorted errors
        fail(f"checkpoint {path} is corrupt or not a checkpoint ({type(error).__name__}); use another checkpoint")
    if not isinstance(checkpoint, dict) or "script" not in checkpoint or "agent" not in checkpoint:
        fail(f"{path} is not a checkpoint of these PPO scripts; pass one written by --save-model or --checkpoint-every")
    missing = [key for key in CHECKPOINT_KEYS if key not in checkpoint]
    if missing:  # e.g. written by an older version of the script
        fail(f"checkpoint {path} lacks {', '.join(missing)}; use one written by this version of {SCRIPT}.py")
    if checkpoint["script"] != SCRIPT:
        fail(f"checkpoint {path} was written by {checkpoint['script']}.py; load it with that script, not {SCRIPT}.py")
    return checkpoint


def check_checkpoint_fits(checkpoint: dict, path: str, envs, args: Args):
    """The saved networks must match the env's observation and action shapes, and its inputs
    must be normalized the same way."""
    observation_shape, action_shape = list(envs.single_observation_space.shape), list(envs.single_action_space.shape)
    if checkpoint["observation_shape"] != observation_shape or checkpoint["action_shape"] != action_shape:
        fail(
            f"checkpoint {path} was made for observations {checkpoint['observation_shape']} and actions "
            f"{checkpoint['action_shape']}, but {args.env_id} has {observation_shape} and {action_shape}; "
            f"use an env with the same spaces"
        )
    for name in ("norm_obs", "rescale_actions"):  # the networks' inputs and outputs must mean the same
        if checkpoint["args"].get(name, False) != getattr(args, name, False):
            fail(f"checkpoint {path} was trained with {name}={checkpoint['args'].get(name, False)}; "
                 f"pass the same --{name.replace('_', '-')} setting")  # fmt: skip
    try:
        load_agent(checkpoint)
    except RuntimeError as error:  # e.g. saved by an edited copy of the script, with other layers
        lines = str(error).strip().splitlines()
        fail(f"checkpoint {path} holds weights of another network ({lines[-1].strip().rstrip('.')}); "
             f"load it with the script that saved it")  # fmt: skip


def load_agent(checkpoint: dict) -> Agent:
    agent = Agent(checkpoint["observation_shape"][0], checkpoint["action_shape"][0])
    agent.load_state_dict(checkpoint["agent"])
    return agent


def args_from_checkpoint(checkpoint: dict) -> Args:
    fields = Args.__dataclass_fields__
    return Args(**{key: value for key, value in checkpoint["args"].items() if key in fields})


def evaluate_checkpoint(args: Args, given: frozenset = frozenset()) -> np.ndarray:
    """`--eval-checkpoint PATH`: play --eval-episodes episodes with the saved policy and its frozen
    normalization statistics; trains nothing and writes no logs (videos only when asked).
    `given`: the flags named on the command line, so that one ignored at its default value is named too."""
    args = validate_own_args(args)
    torch.set_num_threads(args.torch_threads)
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")
    checkpoint = load_checkpoint(args.eval_checkpoint)
    saved_args = args_from_checkpoint(checkpoint)
    ignored = ignored_flags(args, saved_args, given, EVAL_FLAGS)
    if ignored:  # e.g. --env-id: evaluating on another env than the run's would otherwise look done
        print(f"notice: --eval-checkpoint evaluates with the flags the run was trained with; ignoring {ignored}",
              flush=True)  # fmt: skip
    saved_args.async_envs = args.async_envs  # how to step the envs is this invocation's choice
    video_folder = None
    if args.capture_video:
        check_video_support(saved_args)
        video_folder = f"videos/{checkpoint['run_name']}-eval"
    envs = make_envs(saved_args, args.eval_episodes, video_folder, video_trigger=lambda episode: episode == 0,
                     eval_time_limit=args.eval_max_episode_steps)
    check_checkpoint_fits(checkpoint, args.eval_checkpoint, envs, saved_args)
    set_normalization(envs, checkpoint["normalization"], freeze=True)
    agent = load_agent(checkpoint).to(device)
    # the episodes a run of this --seed evaluates on with --eval-every: best.pt's return is reproduced
    returns = evaluate(agent, envs, not args.eval_stochastic, args.seed + EVAL_SEED_OFFSET, device)
    envs.close()
    mode = "stochastic" if args.eval_stochastic else "deterministic"
    print(
        f"{saved_args.env_id}: return {returns.mean():.1f} ± {returns.std():.1f} over {len(returns)} episodes "
        f"({mode}; checkpoint {args.eval_checkpoint}, step {checkpoint['global_step']:,})",
        flush=True,
    )
    return returns


# ---------------------------------------------------------------------------------------------
# Data parallel under torchrun: the pieces that keep the ranks identical


def all_reduce_gradients(grads: list, world_size: int):
    """Average the gradients over ranks in one flattened all-reduce, so every rank takes the same step."""
    flat = torch.cat([grad.reshape(-1) for grad in grads])
    dist.all_reduce(flat)
    flat /= world_size
    offset = 0
    for grad in grads:
        grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
        offset += grad.numel()


def sync_normalization(envs, last_synced: dict, world_size: int, device) -> dict:
    """Merge the normalizers' running statistics over ranks (the count-weighted mean/variance merge),
    so that every rank normalizes with the same numbers. Each rank holds the statistics of the last
    sync plus its own data since then: that shared part is subtracted so it counts once."""

    def moments(stats):  # count, sum and sum of squares: these add up over disjoint data
        mean, var = stats["mean"].double().reshape(-1), stats["var"].double().reshape(-1)
        count = torch.tensor([stats["count"]], dtype=torch.float64)
        return torch.cat([count, count * mean, count * (var + mean**2)])

    merged = {}
    for key, stats in get_normalization(envs).items():
        total = moments(stats).to(device)
        dist.all_reduce(total)
        total = total.cpu() - (world_size - 1) * moments(last_synced[key])
        count, dim = total[0], stats["mean"].numel()
        mean = total[1 : 1 + dim] / count
        var = (total[1 + dim :] / count - mean**2).clamp(min=0.0)
        merged[key] = {"mean": mean.reshape(stats["mean"].shape), "var": var.reshape(stats["var"].shape),
                       "count": count.item()}  # fmt: skip
    set_normalization(envs, merged)
    return merged


# ---------------------------------------------------------------------------------------------
# Console progress: a live bar on a terminal, plain lines in a file or CI


class ProgressReporter:
    def __init__(self, total_timesteps: int, run_dir: str, live: bool, quiet: bool = False):
        self.total, self.last_print, self.quiet = total_timesteps, 0.0, quiet
        self.bar = None
        if quiet:  # ranks other than 0 under torchrun
            return
        logdir = os.path.relpath(os.path.dirname(os.path.abspath(run_dir)))  # the folder that holds the run's folder
        print(f"run {os.path.basename(run_dir)}: logs in {run_dir} (`tensorboard --logdir {logdir}`)", flush=True)
        if live:
            try:
                from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
            except ImportError:  # no rich: plain lines, as in a log file
                return
            self.bar = Progress(
                TextColumn("[bold]{task.completed:,.0f}/{task.total:,.0f} steps"),
                BarColumn(),
                TextColumn("{task.fields[sps]:,.0f} steps/s  return {task.fields[ret]}{task.fields[evaluated]}"),
                TimeRemainingColumn(),
            )
            self.task = self.bar.add_task("train", total=total_timesteps, sps=0, ret="n/a", evaluated="")
            self.bar.start()

    def update(self, global_step: int, sps: float, recent_return: float | None, eval_return: float | None = None):
        ret = "n/a" if recent_return is None else f"{recent_return:.1f}"
        evaluated = "" if eval_return is None else f"  eval {eval_return:.1f}"  # the latest --eval-every mean
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.update(self.task, completed=global_step, sps=sps, ret=ret, evaluated=evaluated)
        elif time.time() - self.last_print > 10 or global_step >= self.total:
            self.last_print = time.time()
            left = int((self.total - global_step) / max(sps, 1e-8))
            print(
                f"step {global_step:,}/{self.total:,} ({100 * global_step / self.total:.0f}%)  {sps:,.0f} steps/s  "
                f"return(last 20) {ret}{evaluated}  time left {left // 3600:02d}:{left % 3600 // 60:02d}:{left % 60:02d}",
                flush=True,
            )

    def message(self, text: str):
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.console.print(text)
        else:
            print(text, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.stop()


# ---------------------------------------------------------------------------------------------
# Training


# flags that belong to one invocation, not to the run: --resume takes these from the command line
RUNTIME_FLAGS = ("cuda", "compile", "cudagraphs", "torch_threads", "async_envs", "track", "capture_video", "backend",
                 "resume")


# the flags --eval-checkpoint uses from its command line; the others come from the checkpoint or play no part
EVAL_FLAGS = ("eval_checkpoint", "eval_episodes", "eval_stochastic", "eval_max_episode_steps", "seed", "cuda",
              "torch_threads", "async_envs", "capture_video")


def ignored_flags(args: Args, saved_args: Args, given: frozenset, own: tuple) -> str:
    """`--name value, ...` of the flags that a run taking its flags from a checkpoint ignores ('' for none): those
    not its own that differ from the saved ones, where given on the command line or away from their defaults."""
    defaults, derived = Args(), ("batch_size", "minibatch_size", "num_iterations")
    args = dataclasses.replace(args, env_kwargs=absolute_model_path(args.env_kwargs))  # as the run saved them
    ignored = [name for name in Args.__dataclass_fields__ if name not in (*own, *derived)
               and getattr(args, name) != getattr(saved_args, name)
               and (name in given or getattr(args, name) != getattr(defaults, name))]  # fmt: skip
    shown = {name: " ".join(value) if isinstance(value := getattr(args, name), tuple) else value for name in ignored}
    return ", ".join(f"--{name.replace('_', '-')} {value}" for name, value in shown.items())


def validate_own_args(args: Args) -> Args:
    """--resume and --eval-checkpoint take the run's flags from its checkpoint: check only the ones this invocation
    uses itself (the others are ignored, and named in a notice)."""
    own = ("eval_checkpoint", "init_from", "eval_episodes", "eval_stochastic", "eval_max_episode_steps", "seed",
           *RUNTIME_FLAGS)
    validate_args(dataclasses.replace(Args(), **{name: getattr(args, name) for name in own}))
    return args


def train(args: Args, given: frozenset = frozenset()) -> dict:
    """Train an agent. Returns a summary: run name, global step, every episode's return, whether
    it was interrupted, the best eval return, the agent, its optimizer and normalization statistics.
    `given`: the flags named on the command line, so that --resume names one ignored at its default value too."""
    args = validate_own_args(args) if args.resume else validate_args(args)
    use_cuda = torch.cuda.is_available() and args.cuda
    device = torch.device("cuda" if use_cuda else "cpu")

    # data parallel under torchrun, as in nanoGPT: without torchrun's RANK variable nothing changes
    ddp = int(os.environ.get("RANK", -1)) != -1
    rank, world_size = 0, 1
    if ddp:
        gpu_per_rank = use_cuda and int(os.environ.get("LOCAL_WORLD_SIZE", 1)) <= torch.cuda.device_count()
        dist.init_process_group(backend=args.backend or ("nccl" if gpu_per_rank else "gloo"))  # nccl: a GPU per rank
        rank, world_size = dist.get_rank(), dist.get_world_size()
        if use_cuda:  # each rank its own GPU when there are enough; otherwise they share (over gloo)
            device = torch.device("cuda", int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())
            torch.cuda.set_device(device)
    master_process = rank == 0  # logs, videos, checkpoints and console output

    resumed = None
    if args.resume:  # the run's hyperparameters come from the checkpoint
        resumed = load_checkpoint(args.resume)
        # a resumed run goes on in the checkpoint's own run directory, wherever it is started from
        run_dir = os.path.dirname(os.path.abspath(args.resume))
        latest = os.path.join(run_dir, "checkpoint.pt")
        # best.pt, or a copy beside checkpoint.pt, is an earlier point of the run: going on from it would drop
        # the run's logs after that point and overwrite its checkpoint.pt
        beside_latest = os.path.exists(latest) and not os.path.samefile(latest, args.resume)
        logged = any(file.startswith("events.out.tfevents.") for file in os.listdir(run_dir))
        if beside_latest or (os.path.basename(args.resume) == "best.pt" and logged):
            instead = f"resume from {latest}, or " if os.path.exists(latest) else ""
            fail(f"--resume {args.resume} would rewind the run in {run_dir} to step {resumed['global_step']:,} "
                 f"and drop its logs after that; {instead}start a new run from {args.resume} with --init-from")  # fmt: skip
        saved_args = args_from_checkpoint(resumed)
        ignored = ignored_flags(args, saved_args, given, RUNTIME_FLAGS)
        if ignored and master_process:  # a flag given to change the run would otherwise vanish without a word
            print(f"notice: --resume continues the run with its saved flags; ignoring {ignored} "
                  f"(to change them, start a new run from its weights with --init-from)", flush=True)  # fmt: skip
        for name in RUNTIME_FLAGS:
            setattr(saved_args, name, getattr(args, name))
        saved_args.init_from = None  # the weights come from the checkpoint now
        args = validate_args(saved_args)
        if args.batch_size != resumed["args"]["batch_size"]:  # the batch counts all ranks
            ranks = resumed["args"]["batch_size"] // (args.num_envs * args.num_steps)
            fail(f"checkpoint {args.resume} was saved by a run of {ranks} rank(s); resume it with the same number "
                 f"(torchrun --nproc-per-node {ranks}, or a plain python run for 1)")  # fmt: skip
        run_name = resumed["run_name"]
        already_finished = resumed["iteration"] >= args.num_iterations  # nothing to do: nothing is written either
    else:
        already_finished = False
        env_name, exp_name = (name.replace("/", "-").replace(":", "-") for name in (args.env_id, args.exp_name))
        run_name = f"{env_name}__{exp_name}__{args.seed}__{int(time.time())}"  # one folder under runs/
        if ddp:  # rank 0's clock names the run
            names = [run_name]
            dist.broadcast_object_list(names, src=0)
            run_name = names[0]
        run_dir = f"runs/{run_name}"
    checkpoints_on = args.save_model or args.checkpoint_every > 0

    # seeding
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    torch.set_num_threads(args.torch_threads)
    if args.cuda and not torch.cuda.is_available() and master_process:
        print("notice: CUDA is not available, running on CPU", flush=True)

    # env setup
    capture_video = args.capture_video and master_process and not already_finished
    if capture_video:
        check_video_support(args)
    video_folder = f"videos/{run_name}" + (f"-resumed-{resumed['global_step']}" if resumed is not None else "")
    envs = make_envs(args, video_folder=video_folder if capture_video else None)
    obs_dim = int(np.prod(envs.single_observation_space.shape))
    action_dim = int(np.prod(envs.single_action_space.shape))

    agent = Agent(obs_dim, action_dim).to(device)
    # detail 3: eps 1e-5; foreach: one multi-tensor step instead of a Python loop (same numbers, faster on CPU)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5, foreach=True)

    global_step, start_iteration, best_eval_return = 0, 1, None
    if args.init_from:  # fine-tuning: weights and normalization statistics, a fresh optimizer and schedule
        source = load_checkpoint(args.init_from)
        check_checkpoint_fits(source, args.init_from, envs, args)
        agent.load_state_dict(source["agent"])
        set_normalization(envs, source["normalization"])
        if master_process:
            print(f"starting from the weights and normalization statistics of {args.init_from} "
                  f"({source['run_name']}, step {source['global_step']:,})", flush=True)  # fmt: skip
    if resumed is not None:
        check_checkpoint_fits(resumed, args.resume, envs, args)
        agent.load_state_dict(resumed["agent"])
        optimizer.load_state_dict(resumed["optimizer"])
        optimizer.param_groups[0].update(foreach=True, fused=None)  # how to step is this invocation's choice
        set_normalization(envs, resumed["normalization"])
        global_step, start_iteration = resumed["global_step"], resumed["iteration"] + 1
        best_eval_return = resumed["best_eval_return"]
        set_rng_state(resumed["rng"])
        if master_process and already_finished:
            print(f"{run_name} already finished its {args.total_timesteps:,} steps; nothing to resume", flush=True)
        elif master_process:
            print(f"resuming {run_name} at step {global_step:,} (iteration {start_iteration})", flush=True)
    if ddp:
        for tensor in agent.state_dict().values():
            dist.broadcast(tensor, src=0)  # identical starting weights on every rank, not just "same seed"
        torch.manual_seed(args.seed + rank + global_step)  # but each rank samples its own actions
    normalization_synced = get_normalization(envs)  # identical on all ranks here (defaults or loaded)
    eval_envs = None  # in-process even with --async-envs: 10 mostly idle workers would only cost memory
    if args.eval_every > 0 and master_process:
        eval_envs = make_envs(dataclasses.replace(args, async_envs=False), args.eval_episodes,
                              eval_time_limit=args.eval_max_episode_steps)
    last_eval_mean = None  # the progress line shows it once an evaluation has run

    if master_process and resumed is None:  # after the env and checkpoint checks: a bad flag leaves no folder
        run_name = claim_run_dir(run_name)
        run_dir = f"runs/{run_name}"
    checkpoint_path, best_path = f"{run_dir}/checkpoint.pt", f"{run_dir}/best.pt"
    writer, wandb_run = None, None
    if master_process and not already_finished:
        if args.track:  # before the SummaryWriter exists, so that wandb mirrors what it writes
            import wandb

            try:  # the run name as id (less what W&B refuses in one): a resumed run goes on in the same W&B run
                wandb_run = wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, name=run_name,
                                       id=re.sub(r"[:;,#?/']", "-", run_name), resume="allow", config=vars(args),
                                       sync_tensorboard=True, save_code=True)  # fmt: skip
            except Exception as error:  # not logged in, no network, a name W&B refuses...
                if resumed is None:
                    os.removedirs(run_dir)  # the folder claimed above, still empty (and runs/, if that is empty)
                reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                fail(f"--track: wandb could not start ({reason}); log in with `wandb login`, "
                     f"set WANDB_MODE=offline, or run without --track")  # fmt: skip
        os.makedirs(run_dir, exist_ok=True)
        # on resume, drop any events logged after the checkpoint by the run that stopped
        writer = SummaryWriter(run_dir, purge_step=global_step + 1 if resumed is not None else None)
        writer.add_text(
            "hyperparameters",
            "|param|value|\n|-|-|\n%s" % ("\n".join([f"|{key}|{value}|" for key, value in vars(args).items()])),
        )

    # rollout storage
    obs = torch.zeros((args.num_steps, args.num_envs, obs_dim)).to(device)
    actions = torch.zeros((args.num_steps, args.num_envs, action_dim)).to(device)
    logprobs = torch.zeros((args.num_steps, args.num_envs)).to(device)
    values = torch.zeros((args.num_steps, args.num_envs)).to(device)
    # what the env returns stays in numpy until the rollout ends: one copy per iteration, not per step
    rewards = np.zeros((args.num_steps, args.num_envs), dtype=np.float32)
    terminations = np.zeros((args.num_steps, args.num_envs), dtype=np.float32)
    truncations = np.zeros((args.num_steps, args.num_envs), dtype=np.float32)
    valid = np.zeros((args.num_steps, args.num_envs), dtype=np.float32)
    # each rank updates on its own share of the batch; their gradients are averaged
    rank_batch_size, rank_minibatch_size = args.batch_size // world_size, args.minibatch_size // world_size

    episodic_returns = []
    recent_returns = deque(maxlen=20)
    timings = {"env": 0.0, "rollout_other": 0.0, "update": 0.0}  # wall seconds, for benchmarks/speed.py
    first_iteration_timings = None  # the first iteration also holds warm-up (and compiling, with --compile)
    progress = ProgressReporter(args.num_iterations * args.batch_size, run_dir, live=sys.stdout.isatty(),
                                quiet=not master_process or already_finished)
    start_time, start_step = time.time(), global_step
    # a resumed run cannot restore the simulators' states: it starts new episodes, with new seeds
    next_obs, _ = envs.reset(seed=args.seed + global_step + rank * args.num_envs)  # each rank its own seeds
    envs.action_space.seed(args.seed)
    next_obs = torch.as_tensor(next_obs, dtype=torch.float32, device=device)
    next_done = np.zeros(args.num_envs, dtype=np.float32)  # did the step that gave next_obs end an episode?

    def minibatch_update(mb_obs, mb_actions, mb_logprobs, mb_advantages, mb_returns, mb_values, mb_valid):
        """One gradient step on a minibatch; returns its loss statistics and the gradient norm."""
        _, newlogprob, entropy, newvalue = agent.get_action_and_value(mb_obs, mb_actions)
        loss, stats = ppo_loss(newlogprob, entropy, newvalue, mb_logprobs, mb_advantages, mb_returns, mb_values, mb_valid, args)
        optimizer.zero_grad()
        loss.backward()
        if ddp:
            all_reduce_gradients([parameter.grad for parameter in agent.parameters()], world_size)
        grad_norm = nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm, foreach=True)  # detail 11
        optimizer.step()
        return torch.cat([stats, grad_norm.detach().reshape(1)])

    def functional_minibatch_update(lr, mb_obs, mb_actions, *rest):
        """The same step written as functions, so that torch.compile makes one graph of all of it (--compile):
        torch.func.grad differentiates the same loss, and torch.optim's functional Adam takes the step on
        the optimizer's own state and hyperparameters, at the learning rate `lr` (a tensor)."""

        def loss_of(parameters):
            _, newlogprob, entropy, newvalue = torch.func.functional_call(agent, parameters, (mb_obs, mb_actions))
            return ppo_loss(newlogprob, entropy, newvalue, *rest, args)

        parameters = dict(agent.named_parameters())
        grads, stats = torch.func.grad(loss_of, has_aux=True)(parameters)
        grads = list(grads.values())
        if ddp:
            all_reduce_gradients(grads, world_size)
        grad_norm = nn.utils.get_total_norm(grads)
        clip_coef = torch.clamp(args.max_grad_norm / (grad_norm + 1e-6), max=1.0)  # what clip_grad_norm_ scales by
        states = [optimizer.state[parameter] for parameter in parameters.values()]
        (beta1, beta2), eps = optimizer.defaults["betas"], optimizer.defaults["eps"]  # reading the group would
        # make the graph depend on its lr: a new graph at every annealed value
        with torch.no_grad():
            adam(
                list(parameters.values()), [grad * clip_coef for grad in grads], [state["exp_avg"] for state in states],
                [state["exp_avg_sq"] for state in states], [], [state["step"] for state in states], foreach=False,
                amsgrad=False, beta1=beta1, beta2=beta2, lr=lr, weight_decay=0.0, eps=eps, maximize=False,
                capturable=device.type != "cpu",  # on a GPU, torch runs a non-capturable Adam outside the graph
                # (and a capturable one too if state_steps comes by keyword: it stays the 6th positional argument)
            )  # fmt: skip
        return torch.cat([stats, grad_norm.reshape(1)])

    policy = agent.sample_action_and_value
    if args.compile:  # LeanRL-style: the rollout's policy call and the minibatch update, each one compiled graph
        torch._inductor.config.fallback_random = True  # the plain path's random draws (a global setting)
        for parameter in agent.parameters():  # the state Adam creates at its first step, or a resumed run's
            state = optimizer.state[parameter]
            optimizer.state[parameter] = {
                "step": state.get("step", torch.zeros(())).to(device),  # on the device, as the graph runs there
                "exp_avg": state.get("exp_avg", torch.zeros_like(parameter)),
                "exp_avg_sq": state.get("exp_avg_sq", torch.zeros_like(parameter)),
            }
        mode = "reduce-overhead" if args.cudagraphs else None  # torch.compile's name for CUDA graphs
        policy, compiled_update = torch.compile(policy, mode=mode), torch.compile(functional_minibatch_update, mode=mode)
        lr = torch.zeros((), device=device)  # the learning rate as a tensor: annealing it compiles no new graph
        if args.cudagraphs:  # a CUDA graph updates in place only tensors it may assume stay at one address
            for tensor in [lr, *(tensor for state in optimizer.state.values() for tensor in state.values())]:
                torch._dynamo.mark_static_address(tensor)

        def minibatch_update(*minibatch):  # --compile's, in place of the plain path's above
            stats = compiled_update(lr.fill_(optimizer.param_groups[0]["lr"]), *minibatch)
            return stats.clone() if args.cudagraphs else stats  # a CUDA graph's next replay overwrites its output

    # Ctrl-C (or SIGTERM, e.g. a cluster preempting the job) finishes the current iteration, then
    # saves and stops cleanly; a second Ctrl-C stops at once
    stop_requested = []

    def request_stop(signum, frame):
        if stop_requested and signum == signal.SIGINT:
            raise KeyboardInterrupt("stopped at once by a second Ctrl-C; logs up to the last iteration are flushed")
        stop_requested.append(signum)
        how = "Ctrl-C again to stop at once" if signum == signal.SIGINT else "SIGTERM received"
        progress.message(f"stopping after this iteration ({how})")

    handle_signals = threading.current_thread() is threading.main_thread()
    if handle_signals:
        previous_handlers = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}

    iteration = start_iteration - 1
    try:
        for iteration in range(start_iteration, args.num_iterations + 1):
            if args.anneal_lr:  # detail 4: linear learning-rate annealing
                frac = 1.0 - (iteration - 1.0) / args.num_iterations
                optimizer.param_groups[0]["lr"] = frac * args.learning_rate

            new_episodes = []  # (global step, return, length)
            rollout_start, env_time = time.perf_counter(), 0.0
            for step in range(0, args.num_steps):
                global_step += args.num_envs * world_size
                obs[step] = next_obs
                # NEXT_STEP autoreset: the step after an episode end only resets that env (its action is
                # ignored, its reward is 0), so it is no experience and stays out of the loss
                valid[step] = 1.0 - next_done

                with torch.inference_mode():  # cheaper than no_grad; what it returns is only copied
                    action, logprob, value = policy(next_obs)
                    values[step] = value.flatten()
                actions[step] = action  # continuous detail 5: store the unclipped sample
                logprobs[step] = logprob

                env_start = time.perf_counter()
                next_obs, rewards[step], terminations[step], truncations[step], infos = envs.step(action.cpu().numpy())
                env_time += time.perf_counter() - env_start
                next_done = np.maximum(terminations[step], truncations[step])
                next_obs = torch.as_tensor(next_obs, dtype=torch.float32, device=device)

                if "episode" in infos:
                    for i in np.flatnonzero(infos["_episode"]):
                        new_episodes.append((global_step, float(infos["episode"]["r"][i]), int(infos["episode"]["l"][i])))

            if ddp:  # rank 0 gets every rank's episodes; all ranks get the same normalization statistics
                gathered = [None] * world_size
                dist.all_gather_object(gathered, new_episodes)
                new_episodes = sorted(episode for rank_episodes in gathered for episode in rank_episodes)
                normalization_synced = sync_normalization(envs, normalization_synced, world_size, device)
            for episode_step, episodic_return, episodic_length in new_episodes:
                episodic_returns.append(episodic_return)
                recent_returns.append(episodic_return)
                if master_process:
                    writer.add_scalar("charts/episodic_return", episodic_return, episode_step)
                    writer.add_scalar("charts/episodic_length", episodic_length, episode_step)

            timings["env"] += env_time
            timings["rollout_other"] += time.perf_counter() - rollout_start - env_time  # mostly policy inference
            update_start = time.perf_counter()
            with torch.no_grad():
                next_value = agent.get_value(next_obs).reshape(1, -1)[0]
            rollout_valid = torch.as_tensor(valid, device=device)
            advantages, returns = compute_gae(
                torch.as_tensor(rewards, device=device), values, next_value,
                torch.as_tensor(terminations, device=device), torch.as_tensor(truncations, device=device),
                rollout_valid, args.gamma, args.gae_lambda, args.bootstrap_truncated,
            )  # fmt: skip

            # flatten the batch
            b_obs = obs.reshape((-1, obs_dim))
            b_logprobs = logprobs.reshape(-1)
            b_actions = actions.reshape((-1, action_dim))
            b_advantages = advantages.reshape(-1)
            b_returns = returns.reshape(-1)
            b_values = values.reshape(-1)
            b_valid = rollout_valid.reshape(-1)

            # optimizing the policy and value network
            update_stats = []
            for epoch in range(args.update_epochs):
                b_inds = torch.randperm(rank_batch_size, device=device)  # detail 6: shuffled minibatches
                for start in range(0, rank_batch_size, rank_minibatch_size):
                    mb_inds = b_inds[start : start + rank_minibatch_size]
                    update_stats.append(minibatch_update(
                        b_obs[mb_inds], b_actions[mb_inds], b_logprobs[mb_inds], b_advantages[mb_inds],
                        b_returns[mb_inds], b_values[mb_inds], b_valid[mb_inds],
                    ))  # fmt: skip

                if args.target_kl is not None:
                    last_approx_kl = update_stats[-1][4].clone()  # the last minibatch's
                    if ddp:  # the ranks must agree to stop
                        dist.all_reduce(last_approx_kl)
                        last_approx_kl /= world_size
                    if last_approx_kl.item() > args.target_kl:
                        break

            # losses are means over every minibatch of the update (CleanRL logs the last one)
            update_means = torch.stack(update_stats).mean(0)
            if ddp:  # and over the ranks
                dist.all_reduce(update_means)
                update_means /= world_size
            pg_loss, v_loss, entropy_loss, old_approx_kl, approx_kl, clipfrac, grad_norm = update_means.tolist()
            if not np.isfinite(grad_norm):  # a nan or inf gradient made the weights nan: stop before they are saved
                fail(f"training diverged at step {global_step:,}: the update's gradients are nan or inf, so nothing of "
                     "this iteration is saved; check the env's observations and rewards for nan, or lower --learning-rate")
            timings["update"] += time.perf_counter() - update_start
            if first_iteration_timings is None:
                first_iteration_timings = {**timings, "total": time.time() - start_time, "global_step": global_step}
            is_valid = b_valid.bool()
            explained_var = explained_variance(b_values[is_valid], b_returns[is_valid])

            sps = (global_step - start_step) / (time.time() - start_time)
            if master_process:
                writer.add_scalar("charts/learning_rate", optimizer.param_groups[0]["lr"], global_step)
                writer.add_scalar("losses/value_loss", v_loss, global_step)
                writer.add_scalar("losses/policy_loss", pg_loss, global_step)
                writer.add_scalar("losses/entropy", entropy_loss, global_step)
                writer.add_scalar("losses/old_approx_kl", old_approx_kl, global_step)
                writer.add_scalar("losses/approx_kl", approx_kl, global_step)
                writer.add_scalar("losses/clipfrac", clipfrac, global_step)
                writer.add_scalar("losses/explained_variance", explained_var, global_step)
                writer.add_scalar("losses/grad_norm", grad_norm, global_step)
                writer.add_scalar("charts/action_std", agent.actor_logstd.exp().mean().item(), global_step)
                writer.add_scalar("charts/SPS", int(sps), global_step)

            if eval_envs is not None and (iteration % args.eval_every == 0 or iteration == args.num_iterations):
                set_normalization(eval_envs, get_normalization(envs), freeze=True)  # a frozen copy
                eval_returns = evaluate(agent, eval_envs, not args.eval_stochastic, args.seed + EVAL_SEED_OFFSET, device)
                eval_mean = last_eval_mean = float(eval_returns.mean())
                writer.add_scalar("eval/episodic_return", eval_mean, global_step)
                writer.add_scalar("eval/episodic_return_std", eval_returns.std(), global_step)
                # a nan mean (an env's nan reward) is never the best
                if np.isfinite(eval_mean) and (best_eval_return is None or eval_mean > best_eval_return):
                    best_eval_return = eval_mean
                    save_checkpoint(best_path, agent, optimizer, envs, args, run_name, global_step, iteration,
                                    best_eval_return)  # fmt: skip
            if master_process and args.checkpoint_every > 0 and iteration % args.checkpoint_every == 0:
                save_checkpoint(checkpoint_path, agent, optimizer, envs, args, run_name, global_step, iteration,
                                best_eval_return)  # fmt: skip
            progress.update(global_step, sps, np.mean(recent_returns) if recent_returns else None, last_eval_mean)
            stop = torch.tensor(float(bool(stop_requested)), device=device)
            if ddp:  # stop together, or the others would wait for the one that left
                dist.all_reduce(stop, op=dist.ReduceOp.MAX)
            if stop.item() > 0:
                stop_requested.append("agreed")
                break

        if writer is not None:
            writer.flush()  # every event of the run is on disk before its final checkpoint appears
        # the last completed iteration is saved, also when stopped early
        if master_process and checkpoints_on and iteration >= start_iteration:
            save_checkpoint(checkpoint_path, agent, optimizer, envs, args, run_name, global_step, iteration,
                            best_eval_return)  # fmt: skip
        if ddp:  # tear down together: gloo can abort a rank that exits while its peer still talks to it
            dist.barrier()
    finally:
        if handle_signals:
            for sig, handler in previous_handlers.items():
                signal.signal(sig, handler)
        progress.close()
        if writer is not None:
            writer.close()  # flushes the TensorBoard events, first: closing envs can fail (a dead --async-envs worker)
        try:
            envs.close()
        except (EOFError, OSError) as error:  # an --async-envs worker killed from outside: nothing left to close
            print(f"notice: an env worker had already stopped ({type(error).__name__})", file=sys.stderr, flush=True)
        if eval_envs is not None:
            eval_envs.close()
        if wandb_run is not None:  # after the envs, which write the last video as they close
            if capture_video:  # as files: wandb's monitor_gym breaks on gymnasium 1.x's RecordVideo
                wandb_run.save(f"{video_folder}/*.mp4", base_path="videos", policy="now")
            crashed = sys.exc_info()[0] is not None  # an exception on its way out of train()
            wandb_run.finish(exit_code=130 if stop_requested else int(crashed))  # uploads the last of the logs
        if ddp:
            dist.destroy_process_group()

    if master_process and stop_requested:
        if checkpoints_on:
            launcher = "python"
            if ddp:  # a multi-rank run resumes with as many ranks
                one_machine = int(os.environ.get("LOCAL_WORLD_SIZE", world_size)) == world_size
                launcher = (f"torchrun --standalone --nproc-per-node {world_size}" if one_machine
                            else f"torchrun <this run's launch options, {world_size} ranks>")  # fmt: skip
            tracking = " --track" if args.track else ""  # the W&B project and entity are the run's own
            hint = f"resume with: {launcher} {os.path.relpath(__file__)} --resume {checkpoint_path}{tracking}"
        else:
            hint = "no checkpoint was saved (use --checkpoint-every N or --save-model to be able to resume)"
        print(f"stopped at step {global_step:,}; logs are in {run_dir}; {hint}", flush=True)
    elif master_process and checkpoints_on and iteration >= start_iteration:
        print(f"saved {checkpoint_path}", flush=True)
    return {
        "run_name": run_name,
        "global_step": global_step,
        "episodic_returns": episodic_returns,
        "interrupted": bool(stop_requested),
        "best_eval_return": best_eval_return,
        "agent": agent,
        "optimizer": optimizer,
        "normalization": get_normalization(envs),
        "timings": {**timings, "total": time.time() - start_time},
        "first_iteration_timings": first_iteration_timings,
    }


def main(args: Args) -> int:
    """Train, or evaluate a checkpoint; returns the exit status (130: stopped by Ctrl-C or SIGTERM)."""
    given = {token[2:].split("=")[0].replace("-", "_") for token in sys.argv[1:] if token.startswith("--")}
    given |= {name[len("no_"):] for name in given if name.startswith("no_")}  # --no-anneal-lr: anneal_lr
    run = evaluate_checkpoint if args.eval_checkpoint else train
    try:
        summary = run(args, frozenset(given))
    except KeyboardInterrupt as interrupt:  # a second Ctrl-C in training, or one before training starts
        raise SystemExit(str(interrupt) or "stopped by Ctrl-C")
    exit_code = 130 if isinstance(summary, dict) and summary["interrupted"] else 0
    if int(os.environ.get("RANK", -1)) != -1:
        # under torchrun, skip the interpreter's teardown: gloo's threads can abort a rank there
        # (seen with torch 2.13: "terminate called without an active exception"); logs are closed
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(exit_code)
    return exit_code


if __name__ == "__main__":
    args = tyro.cli(Args)
    sys.exit(main(args))
