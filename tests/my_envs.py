"""Small envs for the tests, registered on import so that `--env-id my_envs:NAME-v0` finds them."""

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class DictObservationEnv(gym.Env):
    """Dict observations; a reward for pushing the action towards the `target` entry."""

    observation_space = spaces.Dict(
        {"target": spaces.Box(-1.0, 1.0, (1,), np.float32), "position": spaces.Box(-5.0, 5.0, (2,), np.float32)}
    )
    action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.steps, self.target = 0, self.np_random.uniform(-1, 1, size=1).astype(np.float32)
        return self._obs(), {}

    def _obs(self):
        return {"target": self.target, "position": np.zeros(2, np.float32)}

    def step(self, action):
        self.steps += 1
        return self._obs(), float(-abs(action[0] - self.target[0])), False, self.steps >= 20, {}


class WideBoundsEnv(gym.Env):
    """Actions in [-2, 2]; reports the action it actually received in `info["received"]`."""

    observation_space = spaces.Box(-1.0, 1.0, (3,), np.float32)
    action_space = spaces.Box(-2.0, 2.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.steps = 0
        return np.zeros(3, np.float32), {}

    def step(self, action):
        self.steps += 1
        received = np.array(action, dtype=np.float64).copy()
        reward = float(-abs(received[0] - 1.5))  # best action: 1.5, beyond [-1, 1]
        return np.zeros(3, np.float32), reward, False, self.steps >= 20, {"received": received}


class MultiDiscreteEnv(gym.Env):
    """Two action dimensions (3 and 2 choices); reward 1 for matching the observed target pair."""

    observation_space = spaces.Box(0.0, 1.0, (5,), np.float32)
    action_space = spaces.MultiDiscrete([3, 2])

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.steps = 0
        return self._new_target(), {}

    def _new_target(self):
        self.target = np.array([self.np_random.integers(3), self.np_random.integers(2)])
        obs = np.zeros(5, np.float32)
        obs[self.target[0]] = 1.0
        obs[3 + self.target[1]] = 1.0
        return obs

    def step(self, action):
        self.steps += 1
        reward = float(np.all(np.asarray(action) == self.target))
        return self._new_target(), reward, False, self.steps >= 20, {}


class ImageObservationEnv(gym.Env):
    observation_space = spaces.Box(0, 255, (32, 32, 3), np.uint8)
    action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        return np.zeros((32, 32, 3), np.uint8), {}

    def step(self, action):
        return np.zeros((32, 32, 3), np.uint8), 0.0, False, True, {}


class TupleActionEnv(gym.Env):
    observation_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = spaces.Tuple((spaces.Discrete(2), spaces.Box(-1.0, 1.0, (1,), np.float32)))

    def reset(self, *, seed=None, options=None):
        return np.zeros(2, np.float32), {}

    def step(self, action):
        return np.zeros(2, np.float32), 0.0, False, True, {}


class SequenceObservationEnv(gym.Env):
    """Observations of varying length: no fixed-size vector for an MLP."""

    observation_space = spaces.Sequence(spaces.Box(-1.0, 1.0, (2,), np.float32))
    action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        return (np.zeros(2, np.float32),), {}

    def step(self, action):
        return (np.zeros(2, np.float32),), 0.0, False, True, {}


class TextActionEnv(gym.Env):
    observation_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = spaces.Text(max_length=8)

    def reset(self, *, seed=None, options=None):
        return np.zeros(2, np.float32), {}

    def step(self, action):
        return np.zeros(2, np.float32), 0.0, False, True, {}


class MatrixActionEnv(WideBoundsEnv):
    action_space = spaces.Box(-1.0, 1.0, (2, 3), np.float32)


class NestedMultiDiscreteEnv(MultiDiscreteEnv):
    action_space = spaces.MultiDiscrete([[2, 2], [3, 3]])


class ShiftedDiscreteEnv(MultiDiscreteEnv):
    action_space = spaces.Discrete(3, start=1)


class UnboundedBoxEnv(WideBoundsEnv):
    action_space = spaces.Box(-np.inf, np.inf, (1,), np.float32)


class DictActionEnv(TupleActionEnv):
    action_space = spaces.Dict({"move": spaces.Box(-1.0, 1.0, (1,), np.float32)})


class NanRewardEnv(gym.Env):
    """Rewards of 1 for its first `nan_after` steps, then nan (10-step episodes): an env gone wrong mid-run."""

    observation_space = spaces.Box(-1.0, 1.0, (3,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self, nan_after: int = 40):
        self.nan_after, self.total_steps = nan_after, 0  # over all episodes

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.steps = 0
        return self.np_random.uniform(-1, 1, size=3).astype(np.float32), {}

    def step(self, action):
        self.steps += 1
        self.total_steps += 1
        reward = 1.0 if self.total_steps <= self.nan_after else float("nan")
        return self.np_random.uniform(-1, 1, size=3).astype(np.float32), reward, False, self.steps >= 10, {}


class NanRewardBoxEnv(NanRewardEnv):
    action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)


class EndlessEnv(gym.Env):
    """Never terminates or truncates itself; reward 1 per step, so an episode's return is its length. Renders
    blank 16 x 16 frames."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}
    observation_space = spaces.Box(-1.0, 1.0, (3,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self, render_mode=None):
        self.render_mode = render_mode

    def render(self):
        return np.zeros((16, 16, 3), np.uint8)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(3, np.float32), {}

    def step(self, action):
        return np.zeros(3, np.float32), 1.0, False, False, {}


class EndlessBoxEnv(EndlessEnv):
    action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)


# registered without a time limit, and with one of 30 steps
for name, entry_point in [("Endless-v0", EndlessEnv), ("EndlessBox-v0", EndlessBoxEnv)]:
    if name not in gym.registry:
        gym.register(name, entry_point=entry_point)
    if name.replace("-v0", "Limited-v0") not in gym.registry:
        gym.register(name.replace("-v0", "Limited-v0"), entry_point=entry_point, max_episode_steps=30)

for name, entry_point in [
    ("DictObservation-v0", DictObservationEnv),
    ("WideBounds-v0", WideBoundsEnv),
    ("MultiDiscrete-v0", MultiDiscreteEnv),
    ("ImageObservation-v0", ImageObservationEnv),
    ("TupleAction-v0", TupleActionEnv),
    ("SequenceObservation-v0", SequenceObservationEnv),
    ("TextAction-v0", TextActionEnv),
    ("MatrixAction-v0", MatrixActionEnv),
    ("NestedMultiDiscrete-v0", NestedMultiDiscreteEnv),
    ("ShiftedDiscrete-v0", ShiftedDiscreteEnv),
    ("UnboundedBox-v0", UnboundedBoxEnv),
    ("DictAction-v0", DictActionEnv),
    ("NanReward-v0", NanRewardEnv),
    ("NanRewardBox-v0", NanRewardBoxEnv),
]:
    if name not in gym.registry:
        gym.register(name, entry_point=entry_point)
