"""compute_gae against a hand calculation and an independent forward-sum reference."""

import importlib

import numpy as np
import pytest

MODULES = ["ppo_continuous", "ppo_discrete"]


def reference_gae(rewards, values, next_value, terminated, truncated, valid, gamma, lam, bootstrap_truncated):
    """Forward definition, one env at a time: A_t = sum_k (gamma*lam)^(k-t) delta_k, summed from t
    up to the end of t's episode inside the rollout. delta_k bootstraps from the value of the
    observation after step k (values[k+1], or next_value after the last step) unless step k
    terminated, or was truncated and bootstrapping truncation is off. Autoreset steps get 0."""
    num_steps, num_envs = len(rewards), len(rewards[0])
    advantages = [[0.0] * num_envs for _ in range(num_steps)]
    for env in range(num_envs):

        def delta(k):
            following = next_value[env] if k == num_steps - 1 else values[k + 1][env]
            stops = terminated[k][env] or (truncated[k][env] and not bootstrap_truncated)
            return rewards[k][env] + (0.0 if stops else gamma * following) - values[k][env]

        for t in range(num_steps):
            if not valid[t][env]:
                continue
            total, k = 0.0, t
            while True:
                total += (gamma * lam) ** (k - t) * delta(k)
                if terminated[k][env] or truncated[k][env] or k == num_steps - 1:
                    break
                k += 1
            advantages[t][env] = total
    return advantages


def run_gae(module_name, rewards, values, next_value, terminated, truncated, valid, gamma, lam, bootstrap):
    module = importlib.import_module(module_name)
    as_array = lambda x: np.array(x, dtype=np.float32)  # noqa: E731  (the rollout's dtype)
    arrays = [as_array(x) for x in (rewards, values, next_value, terminated, truncated, valid)]
    return module.compute_gae(*arrays, gamma, lam, bootstrap)


@pytest.mark.parametrize("module_name", MODULES)
def test_gae_matches_hand_calculation_without_episode_end(module_name):
    # gamma = lam = 0.5; delta_1 = 2 + 0.5*2 - 1 = 2; delta_0 = 1 + 0.5*1 - 0.5 = 1; A_0 = 1 + 0.25*2
    advantages, returns = run_gae(
        module_name, [[1.0], [2.0]], [[0.5], [1.0]], [2.0], [[0], [0]], [[0], [0]], [[1], [1]], 0.5, 0.5, True
    )
    np.testing.assert_allclose(advantages[:, 0], [1.5, 2.0])
    np.testing.assert_allclose(returns[:, 0], [2.0, 3.0])


@pytest.mark.parametrize("module_name", MODULES)
def test_gae_bootstraps_value_on_truncation(module_name):
    # step 0 truncated: values[1] is V(true final observation); delta_0 = 1 + 0.5*1 - 0.5 = 1.
    # Step 1 is the autoreset step: no advantage, and it does not leak into step 0.
    advantages, _ = run_gae(
        module_name, [[1.0], [0.0]], [[0.5], [1.0]], [2.0], [[0], [0]], [[1], [0]], [[1], [0]], 0.5, 0.5, True
    )
    np.testing.assert_allclose(advantages[:, 0], [1.0, 0.0])


@pytest.mark.parametrize("module_name", MODULES)
def test_gae_treats_truncation_as_terminal_when_bootstrap_is_off(module_name):
    # delta_0 = 1 - 0.5 = 0.5: CleanRL's treatment
    advantages, _ = run_gae(
        module_name, [[1.0], [0.0]], [[0.5], [1.0]], [2.0], [[0], [0]], [[1], [0]], [[1], [0]], 0.5, 0.5, False
    )
    np.testing.assert_allclose(advantages[:, 0], [0.5, 0.0])


@pytest.mark.parametrize("module_name", MODULES)
def test_gae_does_not_bootstrap_on_termination(module_name):
    # terminated at step 1: delta_1 = 2 - 1 = 1; delta_0 = 1 + 0.5*1 - 0.5 = 1; A_0 = 1 + 0.25*1;
    # step 2 is the autoreset step (0); step 3 starts the next episode: delta_3 = 3 + 0.5*4 - 2 = 3
    advantages, returns = run_gae(
        module_name,
        [[1.0], [2.0], [0.0], [3.0]], [[0.5], [1.0], [7.0], [2.0]], [4.0],
        [[0], [1], [0], [0]], [[0], [0], [0], [0]], [[1], [1], [0], [1]], 0.5, 0.5, True,
    )  # fmt: skip
    np.testing.assert_allclose(advantages[:, 0], [1.25, 1.0, 0.0, 3.0])
    np.testing.assert_allclose(returns[:, 0], [1.75, 2.0, 7.0, 5.0])


@pytest.mark.parametrize("module_name", MODULES)
def test_gae_bootstraps_from_next_value_when_the_last_step_is_truncated(module_name):
    # last step truncated: next_value is V(final observation); delta_1 = 2 + 0.5*4 - 1 = 3
    advantages, _ = run_gae(
        module_name, [[1.0], [2.0]], [[0.5], [1.0]], [4.0], [[0], [0]], [[0], [1]], [[1], [1]], 0.5, 0.5, True
    )
    np.testing.assert_allclose(advantages[:, 0], [1.0 + 0.25 * 3.0, 3.0])


@pytest.mark.parametrize("module_name", MODULES)
@pytest.mark.parametrize("bootstrap", [True, False])
def test_gae_matches_reference_on_random_rollouts(module_name, bootstrap):
    rng = np.random.default_rng(0)
    num_steps, num_envs, gamma, lam = 40, 3, 0.99, 0.95
    rewards = rng.normal(size=(num_steps, num_envs)).tolist()
    values = rng.normal(size=(num_steps, num_envs)).tolist()
    next_value = rng.normal(size=num_envs).tolist()
    terminated = (rng.random((num_steps, num_envs)) < 0.1).astype(float)
    truncated = ((rng.random((num_steps, num_envs)) < 0.1) & (terminated == 0)).astype(float)
    valid = np.ones((num_steps, num_envs))
    for t in range(1, num_steps):  # NEXT_STEP: the step after a done is the autoreset step...
        valid[t] = 1 - np.maximum(terminated[t - 1], truncated[t - 1])
        terminated[t] *= valid[t]  # ...which never ends an episode itself
        truncated[t] *= valid[t]
    assert terminated.sum() > 3 and truncated.sum() > 3  # the sequence exercises both kinds of end
    expected = reference_gae(
        rewards, values, next_value, terminated.tolist(), truncated.tolist(), valid.tolist(), gamma, lam, bootstrap
    )
    advantages, returns = run_gae(
        module_name, rewards, values, next_value, terminated, truncated, valid, gamma, lam, bootstrap
    )
    np.testing.assert_allclose(advantages, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(returns, np.array(expected) + np.array(values), rtol=1e-5, atol=1e-5)
