# PPO for discrete (Discrete, MultiDiscrete) action spaces, e.g. CartPole, in one file: copy it to start your research.
# Top to bottom: Args, envs, Agent, GAE and the loss, train(), then the plumbing. "Detail N" is an implementation detail
# of Huang et al., "The 37 Implementation Details of Proximal Policy Optimization" (ICLR blog track, 2022).
import ast
import contextlib
import gc
import importlib.util
import inspect
import os
import random
import signal
import sys
import time
from dataclasses import dataclass, replace
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import tyro
from torch.utils.tensorboard import SummaryWriter

if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):  # no screen: render off-screen, unless the
    os.environ.setdefault("MUJOCO_GL", "egl")  # user chose otherwise
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # pygame (CartPole...), without SDL's search for a display


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]  # the name of this experiment
    seed: int = 1  # seed of the experiment
    torch_deterministic: bool = True  # if toggled, `torch.backends.cudnn.deterministic=True`
    cuda: bool = True  # if toggled, use CUDA when available (falls back to CPU with a notice)
    torch_threads: int = 1  # CPU threads for torch; one is fastest for small MLPs
    compile: bool = False  # torch.compile the rollout's policy and the minibatch update (compiling takes seconds)
    cudagraphs: bool = False  # with --compile on a GPU: replay the compiled graphs as CUDA graphs
    async_envs: bool = False  # step the envs in subprocesses, one per env: pays when env steps are slow
    track: bool = False  # if toggled, mirror the TensorBoard logs to Weights and Biases (needs `pip install wandb`)
    wandb_project_name: str = "cleanRL"  # the wandb's project name
    wandb_entity: str | None = None  # the entity (team) of wandb's project
    capture_video: bool = False  # whether to capture videos of the agent (sub-env 0) to the `videos/{run_name}` folder

    # Algorithm specific arguments
    env_id: str = "CartPole-v1"  # a registered gymnasium id, `module:EnvName-v0` or `dm_control/DOMAIN-TASK-v0`
    env_kwargs: tuple[str, ...] = ()  # keyword arguments for gym.make as key=value pairs, e.g. xml_file=robot.xml
    total_timesteps: int = 500000  # total timesteps of the experiments
    learning_rate: float = 2.5e-4  # the learning rate of the optimizer
    num_envs: int = 4  # the number of parallel game environments (per rank under torchrun)
    num_steps: int = 128  # the number of steps to run in each environment per policy rollout
    anneal_lr: bool = True  # Toggle learning rate annealing for policy and value networks
    gamma: float = 0.99  # the discount factor gamma
    gae_lambda: float = 0.95  # the lambda for the general advantage estimation
    num_minibatches: int = 4  # the number of mini-batches
    update_epochs: int = 4  # the K epochs to update the policy
    norm_adv: bool = True  # Toggles advantages normalization
    clip_coef: float = 0.2  # the surrogate clipping coefficient
    clip_vloss: bool = True  # Toggles whether or not to use a clipped loss for the value function, as per the paper.
    ent_coef: float = 0.01  # coefficient of the entropy
    vf_coef: float = 0.5  # coefficient of the value function
    max_grad_norm: float = 0.5  # the maximum norm for the gradient clipping
    target_kl: float | None = None  # the target KL divergence threshold
    bootstrap_truncated: bool = True  # bootstrap episodes cut by a time limit (off: as if terminal, like CleanRL)
    norm_obs: bool = False  # normalize observations by their running mean and std, then clip them to +-clip-obs
    clip_obs: float = 10.0  # the clip range of normalized observations
    norm_reward: bool = False  # scale rewards by the running std of the discounted return, then clip to +-clip-reward
    clip_reward: float = 10.0  # the clip range of scaled rewards
    norm_value: bool = False  # the critic learns the returns standardized by their running mean and std
    hidden_sizes: tuple[int, ...] = (64, 64)  # the hidden layers of the actor's and the critic's MLPs
    activation: Literal["Tanh", "ReLU", "ELU", "GELU", "SiLU"] = "Tanh"  # the MLPs' activation (a torch.nn class)
    save_model: bool = True  # save runs/{run_name}/checkpoint.pt at the end, or when stopped by Ctrl-C or SIGTERM
    checkpoint_every: int = 0  # also save it every N iterations (0: off)
    resume: str | None = None  # continue the run of this checkpoint, in its folder, with its saved flags
    init_from: str | None = None  # start a new run from this checkpoint's weights and normalization statistics
    eval_every: int = 0  # evaluate every N iterations (0: off), with frozen statistics; keep runs/{run_name}/best.pt
    eval_episodes: int = 10  # the number of episodes of each evaluation
    eval_stochastic: bool = False  # sample actions when evaluating (default: the most likely action)
    eval_max_episode_steps: int = 10_000  # evaluation cuts episodes here where the env has no time limit of its own
    eval_checkpoint: str | None = None  # evaluate this checkpoint on its run's env and flags, print the return, exit


def make_env(args: Args, idx: int, env_kwargs: dict, video_folder=None, evaluation=False, trainer_pid=None):
    def thunk():
        if trainer_pid is not None and os.getpid() != trainer_pid:  # an --async-envs worker leaves Ctrl-C and
            for sig in (signal.SIGINT, signal.SIGTERM):  # SIGTERM (sent to the whole process group) to the trainer,
                signal.signal(sig, signal.SIG_IGN)  # which finishes its iteration, saves, then closes the workers
        film = video_folder is not None and idx == 0  # sub-env 0 alone: the vector RecordVideo renders every one
        env = gym.make(args.env_id, **({**env_kwargs, "render_mode": "rgb_array"} if film else env_kwargs))
        endless = getattr(env.spec, "max_episode_steps", None) is None  # registered without a time limit
        if evaluation and endless:  # evaluation waits for every episode to end
            env = gym.wrappers.TimeLimit(env, args.eval_max_episode_steps)
        if idx == 0:
            check_env(env, args, env_kwargs, endless and evaluation)
        if film:  # frames stay in memory until the video is written: of an endless episode, keep the first ones
            trigger = (lambda episode: episode == 0) if evaluation else None  # None: gymnasium's schedule
            env = gym.wrappers.RecordVideo(env, video_folder, trigger, video_length=1000 if endless else 0)
        if not (isinstance(env.observation_space, gym.spaces.Box) and len(env.observation_space.shape) == 1):
            env = gym.wrappers.FlattenObservation(env)  # Dict, Tuple, Discrete, 2-D Box... -> one flat vector
        return env

    return thunk


def make_envs(args: Args, video_folder=None, evaluation=False):
    """CleanRL's vector env and wrappers, in NEXT_STEP autoreset mode; `evaluation`: an env per evaluation episode."""
    env_kwargs, pid = parse_env_kwargs(args.env_kwargs), os.getpid() if args.async_envs else None
    num_envs = args.eval_episodes if evaluation else args.num_envs
    thunks = [make_env(args, i, env_kwargs, video_folder, evaluation, pid) for i in range(num_envs)]
    try:  # detail 1: vectorized envs
        if args.env_id.startswith("dm_control/"):  # shimmy registers the dm_control/ ids as it is imported
            importlib.import_module("shimmy")
        vector_env = gym.vector.AsyncVectorEnv if args.async_envs else gym.vector.SyncVectorEnv
        envs = vector_env(thunks, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
    except Exception as error:  # an unknown or retired id, a missing extra or module, a wrong keyword...
        given = f" with --env-kwargs {' '.join(args.env_kwargs)}" if args.env_kwargs else ""
        fail(f"cannot make {args.env_id}{given}: {str(error).strip().splitlines()[0]}")
    envs = gym.wrappers.vector.RecordEpisodeStatistics(envs)  # raw returns, before any scaling
    if args.norm_obs:
        envs = gym.wrappers.vector.NormalizeObservation(envs)
        envs.obs_rms = RunningMeanStd(shape=envs.single_observation_space.shape, dtype=np.float32)  # faster: below
        clip_obs = lambda obs: np.clip(obs, -args.clip_obs, args.clip_obs)  # noqa: E731
        envs = gym.wrappers.vector.TransformObservation(envs, clip_obs, envs.observation_space)
    if args.norm_reward:
        envs = gym.wrappers.vector.NormalizeReward(envs, gamma=args.gamma)
        envs.return_rms = RunningMeanStd()  # faster: below
        clip_reward = lambda reward: np.clip(reward, -args.clip_reward, args.clip_reward)  # noqa: E731
        envs = gym.wrappers.vector.TransformReward(envs, clip_reward)
    return envs


class RunningMeanStd(gym.wrappers.utils.RunningMeanStd):  # gymnasium's, with np.mean's and np.var's arithmetic
    def update(self, x):  # written out: the same numbers, without their overhead (a single row: itself, variance 0)
        mean = x[0] if len(x) == 1 else x.sum(0) / len(x)
        self.update_from_moments(mean, 0.0 if len(x) == 1 else ((x - mean) ** 2).sum(0) / len(x), len(x))


def mlp(in_dim: int, out_dim: int, out_std: float, hidden=(64, 64), activation=nn.Tanh):
    """Linear layers with orthogonal init and zero biases (detail 2): gain sqrt(2), and out_std for the last one."""
    layers, sizes = [], [in_dim, *hidden, out_dim]
    for i, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:])):
        layers.append(nn.Linear(fan_in, fan_out))
        nn.init.orthogonal_(layers[-1].weight, np.sqrt(2) if i < len(hidden) else out_std)
        nn.init.constant_(layers[-1].bias, 0.0)
        layers += [activation()] if i < len(hidden) else []
    return nn.Sequential(*layers)


def action_nvec(space) -> list[int]:
    """The number of choices of each action dimension: [n] for Discrete(n)."""
    return [int(space.n)] if isinstance(space, gym.spaces.Discrete) else [int(n) for n in space.nvec]


class Agent(nn.Module):
    def __init__(self, obs_dim: int, nvec: list[int], hidden_sizes=(64, 64), activation="Tanh"):
        super().__init__()
        self.nvec = list(nvec)
        # detail 13: separate MLPs for critic and actor, 64-64 tanh by default
        layers = dict(hidden=tuple(hidden_sizes), activation=getattr(nn, activation))
        self.critic = mlp(obs_dim, 1, out_std=1.0, **layers)
        self.actor = mlp(obs_dim, sum(self.nvec), out_std=0.01, **layers)
        # --norm-value: the running mean, variance and count of the returns, whose standardized values the critic learns
        self.register_buffer("return_rms", torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))

    def get_value(self, x):  # the critic, for the rollout's values (once, over all its steps) and the loss's
        return self.critic(x)

    def get_action_and_value(self, x, action=None, deterministic=False, act_only=False):
        """The one policy: the rollout and evaluation act (act_only: no entropy, no value), the loss scores actions"""
        # one categorical per action dimension (one for Discrete; MultiDiscrete log-probs and entropies summed), as
        # torch's Categorical computes it, written out: ~20% cheaper
        logits = torch.split(self.actor(x), self.nvec, dim=-1)
        log_p = [z - z.logsumexp(-1, keepdim=True) for z in logits]  # each dimension's log-probabilities
        if action is None:  # torch.multinomial's draw of one sample (argmax of p / Exp(1) noise), minus its checks
            draw = lambda lp: (lp.softmax(-1) / torch.empty_like(lp).exponential_()).argmax(-1)  # noqa: E731
            action = torch.stack([z.argmax(-1) if deterministic else draw(lp) for z, lp in zip(logits, log_p)], -1)
        logprob = sum(lp.gather(-1, a[:, None])[:, 0] for lp, a in zip(log_p, action.unbind(-1)))
        if act_only:
            return action, logprob, None, None
        entropy = sum(-(lp.clamp(min=torch.finfo(lp.dtype).min) * lp.softmax(-1)).sum(-1) for lp in log_p)
        return action, logprob, entropy, self.get_value(x)


def compute_gae(rewards, values, next_value, terminations, truncations, valid, gamma, gae_lambda, bootstrap_truncated):
    """Advantages and returns of a [num_steps, num_envs] rollout (detail 5), in numpy (~6x faster than torch on a CPU).
    NEXT_STEP autoreset: values[t + 1] (or next_value) is the value of step t's true final observation if truncated."""
    episode_end = np.maximum(terminations, truncations)
    no_bootstrap = terminations if bootstrap_truncated else episode_end
    next_values = np.concatenate([values[1:], next_value.reshape(1, -1)])
    deltas = rewards + gamma * next_values * (1.0 - no_bootstrap) - values  # all steps at once; only the
    decays = gamma * gae_lambda * (1.0 - episode_end)  # recursion below goes step by step
    advantages, lastgaelam = np.zeros_like(rewards), np.zeros_like(next_value)
    for t in reversed(range(len(rewards))):
        lastgaelam = (deltas[t] + decays[t] * lastgaelam) * valid[t]
        advantages[t] = lastgaelam
    return advantages, advantages + values


def ppo_loss(newlogprob, entropy, newvalue, mb: dict, args: Args):
    """The clipped PPO loss of minibatch `mb` (tensors by name) over its `valid` steps; stats by name (detail 12)."""
    mask, num_valid = mb["valid"], mb["valid"].sum().clamp(min=1.0)  # (at least 1: a minibatch of reset steps only)
    masked_mean = lambda x: (x * mask).sum() / num_valid  # noqa: E731  (over real transitions only)
    logratio = newlogprob - mb["logprobs"]
    ratio = logratio.exp()
    with torch.no_grad():
        old_approx_kl = masked_mean(-logratio)
        approx_kl = masked_mean((ratio - 1) - logratio)
        clipfrac = masked_mean(((ratio - 1.0).abs() > args.clip_coef).float())
    advantages = mb["advantages"]
    if args.norm_adv:  # detail 7: per-minibatch advantage normalization, over real transitions only
        adv_mean = masked_mean(advantages)
        adv_var = ((advantages - adv_mean) ** 2 * mask).sum() / (num_valid - 1).clamp(min=1.0)
        advantages = (advantages - adv_mean) / (adv_var.sqrt() + 1e-8)
    # detail 8: clipped surrogate objective
    pg_loss1 = -advantages * ratio
    pg_loss2 = -advantages * torch.clamp(ratio, 1 - args.clip_coef, 1 + args.clip_coef)
    pg_loss = masked_mean(torch.max(pg_loss1, pg_loss2))
    newvalue, returns, values = newvalue.view(-1), mb["returns"], mb["values"]
    if args.clip_vloss:  # detail 9: clipped value loss
        v_loss_unclipped = (newvalue - returns) ** 2
        v_clipped = values + torch.clamp(newvalue - values, -args.clip_coef, args.clip_coef)
        v_loss_clipped = (v_clipped - returns) ** 2
        v_loss = 0.5 * masked_mean(torch.max(v_loss_unclipped, v_loss_clipped))
    else:
        v_loss = 0.5 * masked_mean((newvalue - returns) ** 2)
    entropy_loss = masked_mean(entropy)
    loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef  # detail 10
    stats = dict(policy_loss=pg_loss.detach(), value_loss=v_loss.detach(), entropy=entropy_loss.detach())
    return loss, stats | dict(old_approx_kl=old_approx_kl, approx_kl=approx_kl, clipfrac=clipfrac)


def update_return_rms(rms, returns: np.ndarray, world_size: int = 1) -> tuple[float, float]:
    """--norm-value: merge every rank's returns into `rms` (mean, variance, count), as gymnasium's RunningMeanStd."""
    sums = torch.tensor([returns.size, returns.sum(dtype=np.float64), (returns.astype(np.float64) ** 2).sum()])
    count, total, squares = mean_over_ranks(sums.to(rms), world_size) * world_size
    batch_mean, (mean, var, old_count) = total / count, rms
    delta, new_count = batch_mean - mean, old_count + count
    m2 = var * old_count + (squares / count - batch_mean**2) * count + delta**2 * old_count * count / new_count
    rms.copy_(torch.stack([mean + delta * count / new_count, (m2 / new_count).clamp(min=1e-8), new_count]))
    return rms[0].item(), rms[1].sqrt().item()


def update_minibatch(agent, optimizer, mb: dict, args: Args, world_size: int = 1) -> dict:
    """One gradient step on a minibatch (--compile runs it compiled); returns the debug scalars by name."""
    _, newlogprob, entropy, newvalue = agent.get_action_and_value(mb["obs"], mb["actions"])
    loss, stats = ppo_loss(newlogprob, entropy, newvalue, mb, args)
    for parameter in agent.parameters():  # zero_grad(); compiled, the optimizer's would break the graph
        parameter.grad = None
    loss.backward()
    if world_size > 1:  # torchrun: the ranks average their gradients in one flattened all-reduce, and step alike
        grads = [parameter.grad for parameter in agent.parameters()]
        flat = mean_over_ranks(torch.cat([grad.flatten() for grad in grads]), world_size)
        torch._foreach_copy_(grads, [mean.view_as(g) for g, mean in zip(grads, flat.split([g.numel() for g in grads]))])
    # detail 11: gradient clipping; compiled, the per-tensor norms fuse into one kernel (foreach's stay an eager call)
    stats["grad_norm"] = nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm, foreach=not args.compile)
    optimizer.step()
    return stats


def train(args: Args) -> dict:
    """Train an agent; returns a summary of the run (its name, steps, returns, agent, optimizer, statistics...)."""
    run = Run(args)  # its flags (a resumed run's own), torchrun's processes and the device, as in nanoGPT
    args, device, world_size, master_process = run.args, run.device, run.world_size, run.rank == 0
    if args.resume and run.checkpoint["iteration"] >= args.num_iterations:  # nothing to do, and nothing to write
        print(f"{run.name} already finished its {args.total_timesteps:,} steps; nothing to resume", flush=True)
        return {"run_name": run.name, "global_step": run.checkpoint["global_step"], "interrupted": False}

    random.seed(args.seed), np.random.seed(args.seed), torch.manual_seed(args.seed)  # seeding
    torch.backends.cudnn.deterministic = args.torch_deterministic

    envs = make_envs(args, run.video_folder)  # env setup
    obs_dim, nvec = envs.single_observation_space.shape[0], action_nvec(envs.single_action_space)
    eval_args = replace(args, async_envs=False)  # in this process: --async-envs workers would idle between evaluations
    eval_envs = make_envs(eval_args, evaluation=True) if args.eval_every and master_process else None

    agent = Agent(obs_dim, nvec, args.hidden_sizes, args.activation).to(device)
    # detail 3: Adam with eps 1e-5, one multi-tensor step; --compile anneals a tensor in place: no new graph
    lr = torch.tensor(args.learning_rate, device=device) if args.compile else args.learning_rate
    optimizer = torch.optim.Adam(agent.parameters(), lr=lr, eps=1e-5, foreach=True, capturable=args.compile)
    global_step, start_iteration, best_eval_return = run.start(envs, agent, optimizer)  # its checkpoint; its logs
    if run.ddp or run.checkpoint:  # each rank samples its own actions; a resumed run reseeds from its step
        torch.manual_seed(args.seed + run.rank + global_step)
    for tensor in agent.state_dict().values() if run.ddp else ():
        dist.broadcast(tensor, src=0)  # identical starting weights on every rank, not just "same seed"

    # rollout storage in numpy on the host (a write costs a fraction of a torch one); to the device once an iteration
    obs = np.zeros((args.num_steps, args.num_envs, obs_dim), dtype=np.float32)
    actions = np.zeros((args.num_steps, args.num_envs, len(nvec)), dtype=np.int64)
    logprobs, rewards, terminations, truncations, valid = np.zeros((5, args.num_steps, args.num_envs), dtype=np.float32)
    # each rank updates on its own share of the batch; their gradients are averaged
    rank_batch_size, rank_minibatch_size = args.batch_size // world_size, args.minibatch_size // world_size

    policy, update = agent.get_action_and_value, update_minibatch
    if args.compile:  # LeanRL-style: the same two functions, compiled
        torch._inductor.config.fallback_random = True  # the eager path's random draws (a global setting)
        torch._inductor.config.size_asserts = False  # no size checks in each call: dynamo's guards do them
        mode = "reduce-overhead" if args.cudagraphs else None  # torch.compile's name for CUDA graphs
        policy, update = torch.compile(policy, mode=mode), torch.compile(update, mode=mode)

    def save(path):  # everything the run needs to continue from here
        save_checkpoint(path, agent, optimizer, envs, args, run.name, global_step, iteration, best_eval_return)

    episodic_returns, last_eval = [], None
    start_time, start_step, iteration = time.time(), global_step, start_iteration - 1
    # a resumed run cannot restore the simulators' states: it starts new episodes, with new seeds
    next_obs, _ = envs.reset(seed=args.seed + global_step + run.rank * args.num_envs)  # each rank its own seeds
    envs.action_space.seed(args.seed)
    next_done = np.zeros(args.num_envs, dtype=np.float32)  # did the step that gave next_obs end an episode?
    gc.freeze()  # the garbage collector never scans the setup's objects again (torch's, the envs'...)
    try:
        for iteration in range(start_iteration, args.num_iterations + 1):
            if args.anneal_lr:  # detail 4: linear learning-rate annealing (--compile's tensor in place: no new graph)
                lrnow = (1.0 - (iteration - 1.0) / args.num_iterations) * args.learning_rate
                optimizer.param_groups[0]["lr"] = lr.fill_(lrnow) if args.compile else lrnow

            new_episodes = []  # (global step, return, length)
            for step in range(0, args.num_steps):
                global_step += args.num_envs * world_size
                obs[step] = next_obs
                valid[step] = 1.0 - next_done  # NEXT_STEP autoreset: a step that only resets its env is no experience
                if args.cudagraphs:  # a new step for CUDA graph trees: the last replay's outputs are used up
                    torch.compiler.cudagraph_mark_step_begin()
                x = torch.as_tensor(next_obs, dtype=torch.float32, device=device)
                with torch.inference_mode():  # cheaper than no_grad; what it returns is only copied
                    action, logprob, _, _ = policy(x, act_only=True)
                actions[step], logprobs[step] = action.cpu().numpy(), logprob.cpu().numpy()

                next_obs, rewards[step], terminations[step], truncations[step], infos = envs.step(
                    actions[step].reshape(envs.action_space.shape)
                )
                next_done = np.maximum(terminations[step], truncations[step])
                for i in np.flatnonzero(infos.get("_episode", [])):
                    new_episodes.append((global_step, float(infos["episode"]["r"][i]), int(infos["episode"]["l"][i])))

            if run.ddp:  # rank 0 gets every rank's episodes; all ranks get the same normalization statistics
                dist.all_gather_object(gathered := [None] * world_size, new_episodes)
                new_episodes = sorted(episode for rank_episodes in gathered for episode in rank_episodes)
                sync_normalization(envs)
            for episode_step, episodic_return, episodic_length in new_episodes:
                episodic_returns.append(episodic_return)
                if run.writer is not None:
                    run.writer.add_scalar("charts/episodic_return", episodic_return, episode_step)
                    run.writer.add_scalar("charts/episodic_length", episodic_length, episode_step)

            mean, std = agent.return_rms[0].item(), agent.return_rms[1].sqrt().item()  # 0 and 1 without --norm-value
            with torch.no_grad():  # the critic once over the rollout and next_obs, in the returns' own scale
                x = torch.as_tensor(np.concatenate([obs, next_obs[None]]), dtype=torch.float32, device=device)
                values = agent.get_value(x).view(args.num_steps + 1, -1).cpu().numpy()
            rollout = (rewards, values[:-1] * std + mean, values[-1] * std + mean, terminations, truncations, valid)
            advantages, returns = compute_gae(*rollout, args.gamma, args.gae_lambda, args.bootstrap_truncated)
            if args.norm_value:  # value normalization: the statistics of these returns too, then the critic's targets
                mean, std = update_return_rms(agent.return_rms, returns[valid > 0], world_size)

            # flatten the batch (values and returns as the critic predicts them)
            b = dict(obs=obs, actions=actions, logprobs=logprobs, values=(rollout[1] - mean) / std, valid=valid)
            b |= dict(advantages=advantages, returns=(returns - mean) / std)
            b = {name: torch.as_tensor(tensor, device=device).flatten(0, 1) for name, tensor in b.items()}

            # optimizing the policy and value network
            update_stats = []
            for epoch in range(args.update_epochs):
                b_inds = torch.randperm(rank_batch_size, device=device)  # detail 6: shuffled minibatches
                shuffled = {name: tensor[b_inds] for name, tensor in b.items()}  # once: minibatches are slices of it
                for start in range(0, rank_batch_size, rank_minibatch_size):
                    mb = {name: tensor[start : start + rank_minibatch_size] for name, tensor in shuffled.items()}
                    if args.cudagraphs:
                        torch.compiler.cudagraph_mark_step_begin()
                    stats = update(agent, optimizer, mb, args, world_size)
                    update_stats.append(torch.stack(list(stats.values())).detach())  # a copy: replays reuse memory
                if args.target_kl is not None and mean_over_ranks(stats["approx_kl"], world_size) > args.target_kl:
                    break  # every rank at once: they compare the same mean

            # the debug scalars' means over all minibatches and ranks, by name (CleanRL logs the last minibatch's)
            means = torch.stack(update_stats).mean(0)
            losses = dict(zip(stats, mean_over_ranks(means, world_size).tolist()))  # by the stats' names
            if not np.isfinite(losses["grad_norm"]):  # the weights are nan now: stop before they are saved
                fail(f"training diverged at step {global_step:,} (nan or inf gradients): check the env's rewards")
            y_pred, y_true = b["values"][b["valid"].bool()], b["returns"][b["valid"].bool()]  # real transitions only
            losses["explained_variance"] = float(1 - (y_true - y_pred).var() / y_true.var()) if y_true.var() else np.nan

            sps = (global_step - start_step) / (time.time() - start_time)
            if run.writer is not None:
                run.writer.add_scalar("charts/learning_rate", float(optimizer.param_groups[0]["lr"]), global_step)
                for name, value in losses.items():
                    run.writer.add_scalar(f"losses/{name}", value, global_step)
                run.writer.add_scalar("charts/SPS", int(sps), global_step)

            if eval_envs is not None and (iteration % args.eval_every == 0 or iteration == args.num_iterations):
                set_normalization(eval_envs, get_normalization(envs), freeze=True)  # a frozen copy of the statistics
                eval_seed = args.seed + EVAL_SEED_OFFSET
                eval_returns = evaluate(agent, eval_envs, not args.eval_stochastic, eval_seed, device)
                run.writer.add_scalar("eval/episodic_return", last_eval := float(eval_returns.mean()), global_step)
                run.writer.add_scalar("eval/episodic_return_std", eval_returns.std(), global_step)
                if np.isfinite(last_eval) and (best_eval_return is None or last_eval > best_eval_return):
                    best_eval_return = last_eval  # a nan mean (an env's nan reward) is never the best
                    save(f"{run.dir}/best.pt")
            if master_process and args.checkpoint_every > 0 and iteration % args.checkpoint_every == 0:
                save(f"{run.dir}/checkpoint.pt")
            run.progress(global_step, sps, np.mean(episodic_returns[-20:]) if episodic_returns else None, last_eval)
            if run.stop_agreed():
                break

        if run.writer is not None:
            run.writer.flush()  # every event of the run is on disk before its final checkpoint appears
        if master_process and args.save_model and iteration >= start_iteration:  # also when stopped early
            save(f"{run.dir}/checkpoint.pt")
        if run.ddp:  # tear down together: gloo can abort a rank that exits while its peer still talks to it
            dist.barrier()
    finally:
        run.close(envs, eval_envs, global_step, saved=args.save_model and iteration >= start_iteration)
    summary = dict(run_name=run.name, global_step=global_step, episodic_returns=episodic_returns, agent=agent)
    summary |= dict(best_eval_return=best_eval_return, optimizer=optimizer, normalization=get_normalization(envs))
    return summary | {"interrupted": bool(run.stop_requested)}


# =====================================================================================================================
# Plumbing: validation, checkpoints, evaluation, torchrun, logging and progress. None of it changes what is learned.
EVAL_SEED_OFFSET = 100_000  # evaluation episodes are seeded from --seed + this, apart from the training envs'
SCRIPT = "ppo_discrete"
CHECKPOINT_KEYS = ("script", "run_name", "args", "observation_shape", "action_shape", "global_step", "iteration",
                   "best_eval_return", "agent", "optimizer", "normalization")  # fmt: skip
# the flags of one invocation, not of the run (--resume and --eval-checkpoint take the others from the checkpoint)
OWN_FLAGS = ("cuda", "torch_threads", "async_envs", "capture_video", "track", "resume", "init_from", "eval_checkpoint")


def fail(message: str):  # a one-line error for the user instead of a traceback
    raise SystemExit(f"error: {message}")


def validate_args(args: Args) -> Args:
    """Check impossible settings once, right after parsing, and fill in the derived sizes."""
    for names, rule, breaks in [  # (flags, the rule, a value that breaks it; nan breaks every rule)
        ("num_envs num_steps num_minibatches update_epochs total_timesteps torch_threads eval_episodes "
         "eval_max_episode_steps", "at least 1", lambda value: value < 1),
        ("checkpoint_every eval_every", "0 (off) or more", lambda value: value < 0),
        ("gamma gae_lambda", "between 0 and 1", lambda value: not 0 <= value <= 1),
        ("learning_rate vf_coef", "0 or more", lambda value: value < 0),
        ("clip_coef max_grad_norm clip_obs clip_reward target_kl", "above 0", lambda v: v is not None and v <= 0),
        ("ent_coef", "a number", lambda value: False),
        ("seed", f"between 0 and {2**31 - 1:,}", lambda value: not 0 <= value < 2**31),  # evaluation adds to it
    ]:  # fmt: skip
        for name in names.split():
            if breaks(value := getattr(args, name)) or value != value:  # (value != value: nan)
                fail(f"--{name.replace('_', '-')} must be {rule}, got {value}")
    # a model file given relative to here is saved absolute, so that resuming or evaluating elsewhere finds it
    xml = lambda pair: pair.startswith("xml_file=") and os.path.exists(pair[9:])  # noqa: E731
    args.env_kwargs = tuple(f"xml_file={os.path.abspath(p[9:])}" if xml(p) else p for p in args.env_kwargs)
    # the derived sizes, all ranks together (set here, so not flags)
    rank_batch_size, world_size = args.num_envs * args.num_steps, int(os.environ.get("WORLD_SIZE", 1))
    args.batch_size = rank_batch_size * world_size
    args.minibatch_size = args.batch_size // args.num_minibatches
    args.num_iterations = args.total_timesteps // args.batch_size
    installed = importlib.util.find_spec
    for broken, message in [
        (args.resume and args.init_from, "--resume continues a run, --init-from starts a new one; pass only one"),
        (args.eval_checkpoint and args.track, "--eval-checkpoint prints its result and logs nothing; drop --track"),
        (args.eval_checkpoint and (args.resume or args.init_from), "--eval-checkpoint trains nothing; drop --resume "
         "and --init-from"),
        (args.async_envs and args.capture_video, "--capture-video films in this process, --async-envs in others; "
         "drop one of the two"),
        (rank_batch_size % args.num_minibatches, f"--num-envs x --num-steps = {rank_batch_size} does not divide into "
         f"--num-minibatches {args.num_minibatches}; choose a --num-minibatches that divides {rank_batch_size}"),
        (args.num_iterations == 0, f"--total-timesteps {args.total_timesteps} is less than one batch (--num-envs x "
         f"--num-steps x ranks = {args.batch_size}), so no iteration would run; raise --total-timesteps"),
        (min(args.hidden_sizes, default=1) < 1, f"--hidden-sizes must all be 1 or more, got {args.hidden_sizes}"),
        (args.cudagraphs and not args.compile, "--cudagraphs replays the graphs that --compile makes; add --compile"),
        (args.cudagraphs and world_size > 1, "--cudagraphs is not supported under torchrun yet; drop it"),
        (args.cudagraphs and not (args.cuda and torch.cuda.is_available()), "--cudagraphs needs CUDA; drop it on CPU"),
        (args.track and not installed("wandb"), "--track needs wandb: `pip install wandb`, or drop --track"),
        (args.capture_video and not installed("moviepy"), "--capture-video needs moviepy: `pip install moviepy`"),
    ]:  # fmt: skip
        if broken:
            fail(message)
    return args


def parse_env_kwargs(pairs) -> dict:
    """`key=value` pairs for gym.make; values are Python literals where they parse (5, 0.1, True)."""
    kwargs = {}
    for key, sep, value in (pair.partition("=") for pair in pairs):
        if not sep or not key:
            fail(f"--env-kwargs takes key=value pairs, got {key + sep + value!r}")
        if key == "xml_file" and os.sep in value and not os.path.exists(value):  # not one of gymnasium's assets
            fail(f"--env-kwargs xml_file={value}: no such file here ({os.getcwd()}); give a MuJoCo XML file's path")
        value = os.path.abspath(value) if key == "xml_file" and os.path.exists(value) else value  # (not gymnasium's)
        with contextlib.suppress(ValueError, SyntaxError, TypeError):
            value = ast.literal_eval(value)
        kwargs[key] = value
    return kwargs


def check_env(env, args: Args, env_kwargs: dict, cut: bool):
    """Refuse spaces the agent cannot handle, --env-kwargs of the wrong type, a renderer that fails; `cut`: a notice."""
    obs_space, action_space, env_id = env.observation_space, env.action_space, args.env_id
    parts = obs_space.spaces.values() if isinstance(obs_space, gym.spaces.Dict) else [obs_space]
    if any(isinstance(part, gym.spaces.Box) and part.dtype == np.uint8 and len(part.shape) in (2, 3) for part in parts):
        fail(f"{env_id} has image observations {obs_space}: use a CNN agent (e.g. CleanRL's ppo_atari.py)")
    if not isinstance(gym.spaces.flatten_space(obs_space), gym.spaces.Box):  # e.g. Sequence: no fixed size
        fail(f"{env_id} has observations {obs_space} of no fixed size; wrap the env to give a Box")
    if not isinstance(action_space, (gym.spaces.Discrete, gym.spaces.MultiDiscrete)):
        hint = "use ppo_continuous.py for it" if isinstance(action_space, gym.spaces.Box) else "wrap the env's actions"
        fail(f"ppo_discrete.py needs a Discrete or MultiDiscrete action space, but {env_id} has {action_space}; {hint}")
    if isinstance(action_space, gym.spaces.MultiDiscrete) and action_space.nvec.ndim != 1:
        fail(f"{env_id} has a {action_space.nvec.ndim}-D MultiDiscrete {action_space}; wrap the env to take a flat one")
    if np.any(action_space.start != 0):
        fail(f"{env_id} has actions that start at {action_space.start}, not 0; wrap the env to shift them to 0")
    defaults = {name: param.default for name, param in inspect.signature(type(env.unwrapped)).parameters.items()}
    fits = {bool: (bool, int), int: (int,), float: (int, float)}  # an int is a fine float, 0 or 1 a fine flag
    for key, value in env_kwargs.items():
        if (kind := type(defaults.get(key))) in fits and value is not None and not isinstance(value, fits[kind]):
            fail(f"--env-kwargs {key}={value}: {env_id} takes {key} of type {kind.__name__} (default {defaults[key]})")
    try:  # a missing renderer is a clear error now, not a crash mid-run
        if env.render_mode == "rgb_array" and env.reset(seed=0) and np.asarray(env.render()).ndim != 3:
            raise ValueError("it renders no rgb_array frames")
    except Exception as error:  # any renderer failure (no GL, no pygame) ends the same way
        reason = (str(error).strip() or repr(error)).splitlines()[0]
        fail(f"--capture-video cannot render {env_id}: {reason}. Headless, set MUJOCO_GL=egl (or osmesa), or drop it")
    if cut:
        print(f"notice: {env_id} has no time limit; evaluation cuts episodes at {args.eval_max_episode_steps:,} steps")


def run_args(args: Args) -> tuple[Args, dict | None]:
    """The checked flags to run with, and the checkpoint of --resume or --eval-checkpoint, which take the run's own."""
    if not (path := args.resume or args.eval_checkpoint):
        return validate_args(args), None
    evaluation = ("eval_episodes", "eval_stochastic", "eval_max_episode_steps", "seed")
    own = (*OWN_FLAGS, *(("compile", "cudagraphs") if args.resume else evaluation))
    validate_args(replace(Args(), **{name: getattr(args, name) for name in own}))  # only this invocation's own flags
    checkpoint = load_checkpoint(path)
    latest = os.path.join(os.path.dirname(os.path.abspath(path)), "checkpoint.pt")
    logged = any(".tfevents." in file for file in os.listdir(os.path.dirname(latest)))
    # best.pt, or a copy beside checkpoint.pt, is an earlier point of the run: going on from it would drop the run's
    # logs after that point and overwrite its checkpoint.pt
    rewinds = os.path.exists(latest) and not os.path.samefile(latest, path) or path.endswith("best.pt") and logged
    if args.resume and rewinds:
        instead = f"resume from {latest}, or " if os.path.exists(latest) else ""
        fail(f"--resume {path} would rewind its run to step {checkpoint['global_step']:,}; {instead}use --init-from")
    saved = Args(**{key: value for key, value in checkpoint["args"].items() if key in Args.__dataclass_fields__})
    # the other flags given here (away from their defaults, or on the command line) that differ from the run's are
    # named: they would otherwise vanish silently
    ignored = [name for name in vars(saved) if name not in own and getattr(args, name) != getattr(saved, name)]
    ignored = [n for n in ignored if getattr(args, n) != getattr(Args(), n) or f"--{n.replace('_', '-')}" in sys.argv]
    if ignored and int(os.environ.get("RANK", 0)) == 0:
        values = [" ".join(value) if isinstance(value := getattr(args, name), tuple) else value for name in ignored]
        shown = ", ".join(f"--{name.replace('_', '-')} {value}" for name, value in zip(ignored, values))
        print(f"notice: the run's saved flags apply (for others, start a new run with --init-from); ignoring {shown}")
    args = validate_args(replace(saved, **{name: getattr(args, name) for name in own}))
    if args.resume and args.batch_size != checkpoint["args"]["batch_size"]:  # the batch counts all ranks
        ranks = checkpoint["args"]["batch_size"] // (args.num_envs * args.num_steps)
        fail(f"checkpoint {path} was saved by a run of {ranks} rank(s); resume it with as many ranks")
    return args, checkpoint


def normalizers(envs) -> dict:
    """The observation and reward normalizers in the envs' wrapper chain, by their statistics' attribute name."""
    inner = normalizers(envs.env) if isinstance(envs, gym.vector.VectorWrapper) else {}
    return inner | {key: envs for key in ("obs_rms", "return_rms") if key in vars(envs)}


def get_normalization(envs) -> dict:
    """The running statistics of the observation and reward normalizers, as tensors."""
    stats = {key: getattr(wrapper, key) for key, wrapper in normalizers(envs).items()}
    return {k: dict(mean=torch.tensor(s.mean), var=torch.tensor(s.var), count=float(s.count)) for k, s in stats.items()}


def set_normalization(envs, state: dict, freeze: bool = False):
    """Copy running statistics into the envs' normalizers (in their saved dtype); `freeze` stops their updates."""
    for key, wrapper in normalizers(envs).items():
        if (saved := state.get(key)) is not None:
            rms = getattr(wrapper, key)
            rms.mean, rms.var, rms.count = saved["mean"].numpy().copy(), saved["var"].numpy().copy(), saved["count"]
        wrapper.update_running_mean = wrapper.update_running_mean and not freeze


def evaluate(agent, envs, deterministic: bool, seed: int, device) -> np.ndarray:
    """Play one episode in every sub-env of `envs` (with frozen normalization); returns their raw returns."""
    next_obs, _ = envs.reset(seed=seed)
    returns, finished = np.zeros(envs.num_envs), np.zeros(envs.num_envs, dtype=bool)
    while not finished.all():
        with torch.no_grad():
            x = torch.as_tensor(next_obs, dtype=torch.float32, device=device)
            action = agent.get_action_and_value(x, deterministic=deterministic, act_only=True)[0]
        next_obs, _, _, _, infos = envs.step(action.cpu().numpy().reshape(envs.action_space.shape))
        if "episode" in infos:
            first = infos["_episode"] & ~finished  # count each sub-env's first episode only
            returns[first] = infos["episode"]["r"][first]
            finished |= first
    return returns


def evaluate_checkpoint(args: Args) -> np.ndarray:
    """--eval-checkpoint: play the saved policy with its frozen statistics on its run's env; train and log nothing."""
    run = Run(args)  # the run's flags, this invocation's device
    args, checkpoint, device = run.args, run.checkpoint, run.device
    envs = make_envs(args, f"videos/{checkpoint['run_name']}-eval" if args.capture_video else None, evaluation=True)
    agent = load_agent(checkpoint, args.eval_checkpoint, envs, args).to(device)
    set_normalization(envs, checkpoint["normalization"], freeze=True)
    # on the episodes that --eval-every plays in a run of this --seed: best.pt's return is reproduced
    returns = evaluate(agent, envs, not args.eval_stochastic, args.seed + EVAL_SEED_OFFSET, device)
    envs.close()
    mode = "stochastic" if args.eval_stochastic else "deterministic"
    where = f"{mode}; {args.eval_checkpoint}, step {checkpoint['global_step']:,}"
    print(f"{args.env_id}: return {returns.mean():.1f} ± {returns.std():.1f} over {len(returns)} episodes ({where})")
    return returns


def save_checkpoint(path, agent, optimizer, envs, args, run_name, global_step, iteration, best_eval_return):
    """All a run needs to continue, written atomically, as tensors and plain values: weights_only loading takes it."""
    shapes = [list(envs.single_observation_space.shape), action_nvec(envs.single_action_space)]
    values = [SCRIPT, run_name, vars(args), *shapes, global_step, iteration, best_eval_return, agent.state_dict()]
    try:
        with open(f"{path}.tmp", "wb") as f:
            torch.save(dict(zip(CHECKPOINT_KEYS, [*values, optimizer.state_dict(), get_normalization(envs)])), f)
            f.flush(), os.fsync(f.fileno())
        os.replace(f"{path}.tmp", path)  # atomic on POSIX and Windows
    except (OSError, RuntimeError) as error:  # a full disk, a read-only folder (torch's zip writer: RuntimeError)
        with contextlib.suppress(OSError):  # the file written before stays as it was; the partial one goes
            os.remove(f"{path}.tmp")
        reason = getattr(error, "strerror", None) or str(error).strip().splitlines()[0]
        fail(f"cannot write {path} ({reason}); the file there before, if any, is intact: free space or fix the folder")


def load_checkpoint(path: str) -> dict:
    """Load a checkpoint safely (on the CPU), or stop with a one-line error naming the problem."""
    if not os.path.isfile(path):
        there = "is a directory; pass a checkpoint file in it" if os.path.isdir(path) else "does not exist; pass a file"
        fail(f"checkpoint {path} {there}, e.g. {path if os.path.isdir(path) else 'runs/{run_name}'}/checkpoint.pt")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # weights_only refuses what could run code; damaged files raise assorted errors
        if "global" in str(error).lower():
            fail(f"checkpoint {path} was refused: it holds pickled objects that could run code when loaded")
        fail(f"checkpoint {path} is corrupt or not a checkpoint ({type(error).__name__}); use another checkpoint")
    if keys_missing := [key for key in CHECKPOINT_KEYS if not isinstance(checkpoint, dict) or key not in checkpoint]:
        fail(f"checkpoint {path} lacks {', '.join(keys_missing)}: pass one written by this version of {SCRIPT}.py")
    if checkpoint["script"] != SCRIPT:
        fail(f"checkpoint {path} was written by {checkpoint['script']}.py; load it with that script, not {SCRIPT}.py")
    return checkpoint


def load_agent(checkpoint: dict, path="checkpoint", envs=None, args=None) -> Agent:
    """The saved agent, checked against the env's spaces and the flags that change what its inputs and outputs mean."""
    shapes = [list(envs.single_observation_space.shape), action_nvec(envs.single_action_space)] if envs else None
    if shapes and (saved := [checkpoint["observation_shape"], checkpoint["action_shape"]]) != shapes:
        fail(f"checkpoint {path} is for observation and action shapes {saved}, not {shapes}: use an env with those")
    for name in ("norm_obs", "hidden_sizes", "activation") if args else ():
        if checkpoint["args"].get(name, False) != getattr(args, name):
            fail(f"checkpoint {path} was trained with {name}={checkpoint['args'].get(name)}; pass the same setting")
    network = [checkpoint["args"].get(name, getattr(Args, name)) for name in ("hidden_sizes", "activation")]
    agent = Agent(checkpoint["observation_shape"][0], checkpoint["action_shape"], *network)
    try:
        agent.load_state_dict(checkpoint["agent"])
    except RuntimeError as error:  # e.g. saved by an edited copy of the script, with other layers
        reason = str(error).strip().splitlines()[-1].strip()
        fail(f"checkpoint {path} holds weights of another network ({reason}); load it with the script that saved it")
    return agent


def mean_over_ranks(tensor, world_size: int):
    if world_size > 1:
        dist.all_reduce(tensor := tensor.clone())
    return tensor / world_size


def sync_normalization(envs):  # every rank normalizes with rank 0's running statistics, sent after each rollout
    dist.broadcast_object_list(state := [get_normalization(envs)], src=0)
    set_normalization(envs, state[0])


class Run:
    """A run's flags, processes (torchrun's, as nanoGPT's), device, checkpoint, logs, progress, stop; rank 0 writes"""

    def __init__(self, args: Args):
        self.args, self.checkpoint = run_args(args)  # with --resume, the run's own flags and its checkpoint
        self.source = self.checkpoint or (load_checkpoint(self.args.init_from) if self.args.init_from else None)
        args, self.ddp, self.rank = self.args, "RANK" in os.environ, int(os.environ.get("RANK", 0))
        torch.set_num_threads(args.torch_threads)
        use_cuda, self.world_size = args.cuda and torch.cuda.is_available(), int(os.environ.get("WORLD_SIZE", 1))
        if args.cuda and not use_cuda and self.rank == 0:
            print("notice: CUDA is not available, running on CPU", flush=True)
        self.device = torch.device("cuda" if use_cuda else "cpu")
        if self.ddp and use_cuda:  # each rank its own GPU where there are enough; otherwise they share (over gloo)
            self.device = torch.device("cuda", int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())
            torch.cuda.set_device(self.device)
        if self.ddp:  # NCCL for a GPU per rank (it refuses two ranks on one GPU), gloo otherwise
            nccl = use_cuda and int(os.environ.get("LOCAL_WORLD_SIZE", 1)) <= torch.cuda.device_count()
            dist.init_process_group("nccl" if nccl else "gloo", device_id=self.device if nccl else None)
        env_name, exp_name = (name.replace("/", "-").replace(":", "-") for name in (args.env_id, args.exp_name))
        names = [f"{env_name}__{exp_name}__{args.seed}__{int(time.time())}"]
        if self.ddp:  # rank 0's clock names the run
            dist.broadcast_object_list(names, src=0)
        self.name = self.checkpoint["run_name"] if self.checkpoint else names[0]
        self.writer, self.wandb, self.handlers, self.stop_requested, self.last_print = None, None, {}, [], 0.0
        resumed_at = f"-resumed-{self.checkpoint['global_step']}" if self.checkpoint else ""
        self.video_folder = f"videos/{self.name}{resumed_at}" if args.capture_video and self.rank == 0 else None

    def start(self, envs, agent, optimizer) -> tuple[int, int, float | None]:
        """Load a checkpoint (--init-from, --resume), open the folder and logs; returns the step, iteration and best."""
        args, resumed, source, path = self.args, self.checkpoint, self.source, self.args.resume or self.args.init_from
        if source is not None:
            agent.load_state_dict(load_agent(source, path, envs, args).state_dict())
            set_normalization(envs, source["normalization"])
            if self.rank == 0:
                what = "resuming" if resumed else "starting from the weights and normalization statistics of"
                print(f"{what} {source['run_name']} at step {source['global_step']:,}", flush=True)
        if resumed:  # how to step (foreach, capturable, a tensor lr) is this invocation's choice
            resumed["optimizer"]["param_groups"][0] |= {k: optimizer.param_groups[0][k] for k in ("lr", "capturable")}
            optimizer.load_state_dict(resumed["optimizer"])
        self.dir = os.path.dirname(os.path.abspath(args.resume)) if resumed else f"runs/{self.name}"
        for number in range(2, 10**6) if self.rank == 0 and not resumed else ():  # runs of one name started in the
            with contextlib.suppress(FileExistsError):  # same second (a sweep) get -2, -3...: mkdir is atomic
                os.makedirs(self.dir)
                break
            self.dir = f"runs/{self.name}-{number}"
        self.name = os.path.basename(self.dir)
        if self.rank == 0 and args.track:  # before the SummaryWriter exists, so that wandb mirrors what it writes
            wandb, names = importlib.import_module("wandb"), dict(name=self.name, config=vars(args), resume="allow")
            names |= dict(project=args.wandb_project_name, entity=args.wandb_entity, sync_tensorboard=True)
            try:  # the run name as id (less what W&B refuses in one): a resumed run goes on in the same W&B run
                self.wandb = wandb.init(id=self.name.translate(str.maketrans(":;,#?/'", "-------")), **names)
            except Exception as error:  # not logged in, no network, a name W&B refuses...
                if resumed is None:
                    os.removedirs(self.dir)  # the folder made above, still empty (and runs/, if that is empty)
                reason = (str(error).strip() or repr(error)).splitlines()[0]
                fail(f"--track: wandb could not start ({reason}); run `wandb login` or set WANDB_MODE=offline")
        if self.rank == 0:  # a resumed run drops the events that the stopped run logged after its checkpoint
            self.writer = SummaryWriter(self.dir, purge_step=resumed["global_step"] + 1 if resumed else None)
            table = "\n".join(f"|{key}|{value}|" for key, value in vars(args).items())
            self.writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")
            logdir = os.path.relpath(os.path.dirname(os.path.abspath(self.dir)))  # the folder of the run's folder
            print(f"run {self.name}: logs in {self.dir} (`tensorboard --logdir {logdir}`)", flush=True)
        with contextlib.suppress(ValueError):  # (ValueError: not the main thread, which alone gets signals)
            self.handlers = {sig: signal.signal(sig, self.request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        start = (resumed["global_step"], resumed["iteration"] + 1, resumed["best_eval_return"]) if resumed else None
        return start or (0, 1, None)

    def request_stop(self, signum, frame):  # records the signal only: a print here could break one in progress
        if self.stop_requested and signum == signal.SIGINT:  # the second Ctrl-C stops at once
            raise KeyboardInterrupt("stopped at once by a second Ctrl-C; logs up to the last iteration are flushed")
        self.stop_requested.append(signum)

    def stop_agreed(self) -> bool:
        stop = torch.tensor(float(bool(self.stop_requested)), device=self.device)
        if self.ddp:  # stop together, or the others would wait for the one that left
            dist.all_reduce(stop, op=dist.ReduceOp.MAX)
        self.stop_requested += ["another rank"] if stop.item() and not self.stop_requested else []
        return stop.item() > 0

    def progress(self, global_step: int, sps: float, recent_return, eval_return=None):  # every 10 s, and at the end
        total = self.args.num_iterations * self.args.batch_size
        if self.rank == 0 and (time.time() - self.last_print > 10 or global_step >= total):
            self.last_print, left = time.time(), int((total - global_step) / max(sps, 1e-8))
            returns = "n/a" if recent_return is None else f"{recent_return:.1f}"
            returns += "" if eval_return is None else f"  eval {eval_return:.1f}"  # the latest --eval-every mean
            line = f"step {global_step:,}/{total:,} ({global_step / total:.0%})  {sps:,.0f} steps/s  return(last 20) "
            print(f"{line}{returns}  time left {left // 3600:02d}:{left % 3600 // 60:02d}:{left % 60:02d}", flush=True)

    def close(self, envs, eval_envs, global_step: int, saved: bool):
        """Close the logs, envs, W&B and process group; say how the run ended, unless an exception is on its way out."""
        crashed = sys.exc_info()[0] is not None
        for sig, handler in self.handlers.items():
            signal.signal(sig, handler)
        if self.writer is not None:
            self.writer.close()  # flushes the TensorBoard events, first: closing the envs can fail (a dead worker)
        with contextlib.suppress(EOFError, OSError):  # an --async-envs worker killed from outside: nothing to close
            envs.close()
        if eval_envs is not None:
            eval_envs.close()
        if self.wandb is not None:  # after the envs, which write the last video as they close
            if self.video_folder is not None:  # as files: wandb's monitor_gym breaks on gymnasium 1.x's RecordVideo
                self.wandb.save(f"{self.video_folder}/*.mp4", base_path="videos", policy="now")
            self.wandb.finish(exit_code=130 if self.stop_requested else int(crashed))  # uploads the last of the logs
        if self.ddp:
            dist.destroy_process_group()
        path = f"{self.dir}/checkpoint.pt"
        one_machine = int(os.environ.get("LOCAL_WORLD_SIZE", 1)) == self.world_size  # else: its launch options
        launcher = f"torchrun --standalone --nproc-per-node {self.world_size}" if one_machine else "torchrun <...>"
        launcher = launcher if self.ddp else "python"
        resume = f"resume with: {launcher} {os.path.relpath(__file__)} --resume {path}" + " --track" * self.args.track
        stopped = f"stopped at step {global_step:,}; logs are in {self.dir}; " + (resume if saved else "no checkpoint")
        message = stopped if self.stop_requested else f"saved {path}" if saved else f"finished; logs in {self.dir}"
        if self.rank == 0 and not crashed:
            print(message, flush=True)


def main(args: Args) -> int:
    """Train, or evaluate a checkpoint; returns the exit status (130: stopped by Ctrl-C or SIGTERM)."""
    try:
        stopped = evaluate_checkpoint(args) is None if args.eval_checkpoint else train(args)["interrupted"]
    except KeyboardInterrupt as interrupt:  # a second Ctrl-C in training, or one before training starts
        raise SystemExit(str(interrupt) or "stopped by Ctrl-C")
    gc.freeze()  # nor does the interpreter's exit, which would scan every object once more (about 1 s)
    if "RANK" in os.environ:  # under torchrun, skip the interpreter's teardown: gloo's threads can abort a rank there
        sys.stdout.flush(), sys.stderr.flush()  # ("terminate called without an active exception"); logs are closed
        os._exit(130 if stopped else 0)
    return 130 if stopped else 0


if __name__ == "__main__":
    sys.exit(main(tyro.cli(Args)))
