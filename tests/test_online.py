"""Tests of sk_o2o.rl.online: environment helpers."""

import warnings

import numpy as np
import pytest
import torch

gymnasium = pytest.importorskip("gymnasium")

from conftest import warns_at_test_line  # noqa: E402
from sk_o2o.data import D4RL_KEYS  # noqa: E402
from sk_o2o.rl.online import (  # noqa: E402
    collect_transitions,
    copy_env,
    evaluate_policy,
    make_env,
)

ENV = "Pendulum-v1"


def zero_torque(obs):
    return np.zeros((len(obs), 1))


class ControllerEstimator:
    """A fitted-estimator lookalike: a PD controller that swings Pendulum up
    poorly but deterministically, with a noisy ``sample_action``."""

    def __init__(self):
        self.predict_calls = 0
        self.sample_calls = 0
        self.rng = np.random.default_rng(0)

    def predict(self, obs):
        self.predict_calls += 1
        assert obs.shape == (1, 3) and obs.dtype == np.float32
        cos, sin, vel = obs.T
        return (-2.0 * np.arctan2(sin, cos) - 0.5 * vel)[:, None]

    def sample_action(self, obs):
        self.sample_calls += 1
        return self.predict(obs) + self.rng.normal(size=(1, 1))


def test_make_env_accepts_id_and_env():
    env = make_env(ENV, seed=0)
    assert isinstance(env, gymnasium.Env)
    assert make_env(env) is env


@pytest.mark.parametrize("bad", [3, None, ["Pendulum-v1"], object()])
def test_make_env_rejects_non_env(bad):
    with pytest.raises(TypeError, match="env"):
        make_env(bad)


def test_make_env_unknown_id():
    with pytest.raises(ValueError, match="NoSuchEnv-v0"):
        make_env("NoSuchEnv-v0")


def test_bad_env_argument_in_helpers():
    with pytest.raises(TypeError, match="env"):
        evaluate_policy(zero_torque, 42)
    with pytest.raises(ValueError, match="NoSuchEnv-v0"):
        collect_transitions(None, "NoSuchEnv-v0", n_steps=3)


def test_evaluate_policy_deterministic_under_seed():
    a = evaluate_policy(zero_torque, ENV, n_episodes=3, seed=1)
    b = evaluate_policy(zero_torque, make_env(ENV), n_episodes=3, seed=1)
    c = evaluate_policy(zero_torque, ENV, n_episodes=3, seed=2)
    assert a.shape == (3,) and a.dtype == np.float64
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # random actions are seeded too
    r1 = evaluate_policy(None, ENV, n_episodes=2, seed=5)
    r2 = evaluate_policy(None, ENV, n_episodes=2, seed=5)
    np.testing.assert_array_equal(r1, r2)


def test_evaluate_policy_uses_predict_and_beats_random():
    policy = ControllerEstimator()
    controlled = evaluate_policy(policy, ENV, n_episodes=4, seed=0)
    random = evaluate_policy(None, ENV, n_episodes=4, seed=0)
    assert policy.predict_calls == 4 * 200 and policy.sample_calls == 0
    # Pendulum rewards are in [-16.3, 0] over 200-step episodes
    assert np.all(controlled <= 0) and np.all(random >= -16.3 * 200)
    assert controlled.mean() > random.mean()


def test_evaluate_policy_clips_actions():
    # Pendulum clips torque itself, so equal returns alone would not show it:
    # the env must be stepped with actions inside its space.
    env = RecordActions(gymnasium.make(ENV))
    huge = evaluate_policy(lambda o: np.full((1, 1), 1e6), env, n_episodes=1)
    assert np.all(np.concatenate(env.actions) == 2.0)
    capped = evaluate_policy(lambda o: np.full((1, 1), 2.0), ENV, n_episodes=1)
    np.testing.assert_allclose(huge, capped)


@pytest.mark.parametrize("n_episodes", [0, -1])
def test_evaluate_policy_rejects_bad_n_episodes(n_episodes):
    with pytest.raises(ValueError, match="n_episodes"):
        evaluate_policy(zero_torque, ENV, n_episodes=n_episodes)


def test_evaluate_policy_rejects_bad_policy():
    with pytest.raises(TypeError, match="policy"):
        evaluate_policy("not a policy", ENV, n_episodes=1)


def test_helpers_refuse_an_env_the_policy_was_not_fitted_on(
    make_policy, make_transitions
):
    policy = make_policy().fit(make_transitions(n=40, obs_dim=3, act_dim=1))
    for helper in (evaluate_policy, collect_transitions):
        kwargs = {"n_episodes": 1} if helper is evaluate_policy else {"n_steps": 5}
        # MountainCarContinuous has 2 observation features, the policy 3
        with pytest.raises(ValueError, match=r"shape \(2,\), but the policy .* 3"):
            helper(policy, "MountainCarContinuous-v0", **kwargs)


@pytest.mark.parametrize("n_steps", [1, 199, 200, 450])
def test_collect_transitions_shapes_and_delimiting(n_steps):
    data = collect_transitions(None, ENV, n_steps=n_steps, seed=0)
    assert set(data) == set(D4RL_KEYS)
    assert data["observations"].shape == (n_steps, 3)
    assert data["next_observations"].shape == (n_steps, 3)
    assert data["actions"].shape == (n_steps, 1)
    assert data["rewards"].shape == (n_steps,)
    for key in ("observations", "next_observations", "actions", "rewards"):
        assert data[key].dtype == np.float32
    assert data["terminals"].dtype == bool and data["timeouts"].dtype == bool
    # Pendulum never terminates; it is truncated every 200 steps
    assert not data["terminals"].any()
    ends = np.flatnonzero(data["timeouts"])
    expected = sorted({*range(199, n_steps, 200), n_steps - 1})
    np.testing.assert_array_equal(ends, expected)
    # within an episode s' is the next s; across an episode end it is not
    inner = np.setdiff1d(np.arange(n_steps - 1), ends)
    np.testing.assert_array_equal(
        data["next_observations"][inner], data["observations"][inner + 1]
    )
    assert np.all(np.abs(data["actions"]) <= 2.0)


def test_collect_transitions_terminals_on_hopper():
    pytest.importorskip("mujoco")
    data = collect_transitions(None, "Hopper-v5", n_steps=300, seed=0)
    ends = data["terminals"] | data["timeouts"]
    assert data["terminals"].any()
    assert not (data["terminals"] & data["timeouts"]).any()
    assert ends[-1]
    assert data["observations"].dtype == np.float32


def test_collect_transitions_deterministic_and_prefers_sample_action():
    a = collect_transitions(None, ENV, n_steps=50, seed=3)
    b = collect_transitions(None, ENV, n_steps=50, seed=3)
    for key in D4RL_KEYS:
        np.testing.assert_array_equal(a[key], b[key])
    policy = ControllerEstimator()
    collect_transitions(policy, ENV, n_steps=20)
    assert policy.sample_calls == 20
    callable_data = collect_transitions(zero_torque, ENV, n_steps=20)
    assert np.all(callable_data["actions"] == 0)


def test_collect_transitions_rejects_bad_n_steps():
    with pytest.raises(ValueError, match="n_steps"):
        collect_transitions(None, ENV, n_steps=0)
    with pytest.raises(TypeError, match="n_steps"):
        collect_transitions(None, ENV, n_steps=2.5)


class RecordActions(gymnasium.Wrapper):
    """Records the actions it is stepped with; gymnasium cannot recreate it from a
    spec."""

    def __init__(self, env):
        super().__init__(env)
        self.actions = []

    def step(self, action):
        self.actions.append(np.array(action))
        return self.env.step(action)


class CloseSpy(gymnasium.Wrapper):
    """Records its closing in ``closed``; gymnasium cannot recreate it from a spec."""

    def __init__(self, env, closed):
        super().__init__(env)
        self.closed = closed

    def close(self):
        self.closed.append(self)
        super().close()


def _tiny_policy(X=None, next_observations=None, **params):
    """A 2-step IQLPolicy on the shipped Pendulum data; X and next_observations
    replace the data's (e.g. by DataFrames)."""
    from sk_o2o import IQLPolicy
    from sk_o2o.datasets import load_dataset

    data = load_dataset("pendulum-medium-replay-v0")
    return IQLPolicy(
        n_steps=2, hidden_sizes=(16, 16), device="cpu", random_state=0, **params
    ).fit(
        data["observations"] if X is None else X,
        data["actions"],
        rewards=data["rewards"],
        next_observations=(
            data["next_observations"]
            if next_observations is None
            else next_observations
        ),
        terminals=data["terminals"],
        timeouts=data["timeouts"],
    )


def test_copy_env_keeps_kwargs_and_time_limit_or_says_why_not():
    env = gymnasium.make(ENV, max_episode_steps=20, g=2.0)
    twin = copy_env(env)
    assert twin is not env
    assert twin.spec.max_episode_steps == 20 and twin.unwrapped.g == 2.0
    with pytest.raises(ValueError, match="eval_env"):
        copy_env(RecordActions(env))


def test_fit_online_evaluates_on_the_training_env_copy_or_on_eval_env():
    policy = _tiny_policy()
    # The copy keeps the 20-step limit: a 20-step Pendulum return is at least
    # 20 × (−16.3), far above a 200-step one with an untrained policy.
    policy.fit_online(
        gymnasium.make(ENV, max_episode_steps=20),
        20,
        eval_interval=20,
        n_eval_episodes=1,
    )
    evaluation = [h for h in policy.history_ if h["phase"] == "online_eval"]
    assert evaluation[-1]["eval_return"] >= 20 * -16.3
    env = RecordActions(gymnasium.make(ENV, max_episode_steps=20))
    n_before = len(policy.buffer_)
    with pytest.raises(ValueError, match="eval_env"):
        policy.fit_online(env, 20, eval_interval=20)
    assert len(policy.buffer_) == n_before and len(env.actions) == 0
    eval_env = RecordActions(gymnasium.make(ENV, max_episode_steps=20))
    policy.fit_online(env, 20, eval_interval=20, n_eval_episodes=2, eval_env=eval_env)
    assert len(env.actions) == 20 and len(eval_env.actions) == 40


def test_helpers_close_the_environments_they_make(monkeypatch):
    import sk_o2o.rl.online as online

    closed = []
    real_make_env = online.make_env
    monkeypatch.setattr(
        online, "make_env", lambda env: CloseSpy(real_make_env(env), closed)
    )
    evaluate_policy(zero_torque, ENV, n_episodes=1)
    collect_transitions(zero_torque, ENV, n_steps=5)
    assert len(closed) == 2
    monkeypatch.undo()
    evaluate_policy(zero_torque, CloseSpy(make_env(ENV), closed), n_episodes=1)
    assert len(closed) == 2  # the caller's environment stays open


def test_fit_online_closes_the_environments_it_makes(monkeypatch):
    import sk_o2o.rl.online as online

    policy, closed = _tiny_policy(), []
    real_make_env, real_copy_env = online.make_env, online.copy_env
    monkeypatch.setattr(
        online,
        "make_env",
        lambda env: (
            CloseSpy(real_make_env(env), closed) if isinstance(env, str) else env
        ),
    )
    monkeypatch.setattr(
        online,
        "copy_env",
        # A CloseSpy cannot be recreated: copy what it wraps.
        lambda env: CloseSpy(
            real_copy_env(env.env if isinstance(env, CloseSpy) else env), closed
        ),
    )
    policy.fit_online(ENV, 5, eval_interval=5, n_eval_episodes=1)
    assert len(closed) == 2  # the training env made from the id and its copy
    policy.fit_online(gymnasium.make(ENV), 5, eval_interval=5, n_eval_episodes=1)
    assert len(closed) == 3  # the evaluation copy only
    own = [CloseSpy(gymnasium.make(ENV), []) for _ in range(2)]
    policy.fit_online(own[0], 5, eval_interval=5, n_eval_episodes=1, eval_env=own[1])
    assert len(closed) == 3 and own[0].closed == own[1].closed == []
    with pytest.raises(ValueError, match="features"):
        policy.fit_online("MountainCarContinuous-v0", 5, eval_interval=5)
    assert len(closed) == 5  # closed on the way out of a failed call as well


def test_a_policy_fitted_on_a_dataframe_is_stepped_without_warnings():
    import warnings

    from sk_o2o.datasets import load_dataset

    pd = pytest.importorskip("pandas")
    data = load_dataset("pendulum-medium-replay-v0")
    columns = ["cos", "sin", "velocity"]
    policy = _tiny_policy(
        pd.DataFrame(data["observations"], columns=columns),
        pd.DataFrame(data["next_observations"], columns=columns),
    )
    with warnings.catch_warnings():
        # sklearn's "X does not have valid feature names" came once a step.
        warnings.simplefilter("error")
        evaluate_policy(policy, ENV, n_episodes=1)
        collect_transitions(policy, ENV, n_steps=5)
        policy.fit_online(ENV, 5, eval_interval=5, n_eval_episodes=1)


@pytest.mark.parametrize(
    "kwargs, error, name",
    [
        ({"seed": "0"}, TypeError, "seed"),
        ({"seed": -1}, ValueError, "seed"),
        ({"seed": 1.5}, TypeError, "seed"),
        ({"eval_interval": True}, TypeError, "eval_interval"),
        ({"eval_interval": 2.0}, TypeError, "eval_interval"),
        ({"eval_interval": 0}, ValueError, "eval_interval"),
        ({"n_updates_per_step": -1}, ValueError, "n_updates_per_step"),
        ({"n_eval_episodes": 0}, ValueError, "n_eval_episodes"),
        ({"eval_env": ENV, "eval_interval": None}, ValueError, "eval_env"),
    ],
)
def test_fit_online_checks_its_arguments_before_the_first_step(kwargs, error, name):
    # seed=None used to train until the first evaluation and fail there, -1 to
    # fail in gymnasium's reset; eval_interval=True evaluated every step.
    policy = _tiny_policy()
    n_updates, n_rows = policy.n_updates_, len(policy.buffer_)
    with pytest.raises(error, match=name):
        policy.fit_online(ENV, 20, **{"eval_interval": 10, **kwargs})
    assert (policy.n_updates_, len(policy.buffer_)) == (n_updates, n_rows)


class TwoActions(gymnasium.Wrapper):
    """Pendulum that declares 2-dimensional actions (and steps with the first)."""

    def __init__(self, env):
        super().__init__(env)
        self.action_space = gymnasium.spaces.Box(-2.0, 2.0, (2,), np.float32)

    def step(self, action):
        return self.env.step(np.asarray(action)[:1])


def test_fit_online_refuses_eval_envs_that_would_corrupt_or_break_the_run():
    policy = _tiny_policy()
    n_updates, n_rows = policy.n_updates_, len(policy.buffer_)
    env = gymnasium.make(ENV)
    # evaluating on the training env itself resets it mid-episode
    with pytest.raises(ValueError, match="eval_env is env"):
        policy.fit_online(env, 20, eval_interval=10, eval_env=env)
    with pytest.raises(ValueError, match=r"env actions have shape \(2,\)"):
        policy.fit_online(ENV, 20, eval_interval=10, eval_env=TwoActions(env))
    assert (policy.n_updates_, len(policy.buffer_)) == (n_updates, n_rows)
    with pytest.raises(ValueError, match=r"env actions have shape \(2,\)"):
        evaluate_policy(policy, TwoActions(env), n_episodes=1)


class ColumnObservations(gymnasium.ObservationWrapper):
    """Pendulum with (3, 1) observations."""

    def __init__(self, env):
        super().__init__(env)
        self.observation_space = gymnasium.spaces.Box(-8.0, 8.0, (3, 1), np.float32)

    def observation(self, observation):
        return np.asarray(observation, dtype=np.float32).reshape(3, 1)


def test_helpers_flatten_observations_for_a_policy_fitted_on_collected_rows():
    from sk_o2o import IQLPolicy

    env = ColumnObservations(gymnasium.make(ENV))
    data = collect_transitions(None, env, n_steps=50)
    assert data["observations"].shape == (50, 3)
    policy = IQLPolicy(
        n_steps=2, hidden_sizes=(8,), reward_scaling="none", device="cpu"
    ).fit(data)
    assert collect_transitions(policy, env, n_steps=5)["observations"].shape == (5, 3)
    assert evaluate_policy(policy, env, n_episodes=1).shape == (1,)


def test_fit_online_after_load_warns_that_the_buffer_is_empty(tmp_path):
    import sk_o2o
    from sk_o2o.datasets import load_dataset

    policy = _tiny_policy()
    policy.save(tmp_path / "policy.safetensors")
    loaded = sk_o2o.load(tmp_path / "policy.safetensors")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded.fit_online(ENV, 0)  # nothing trained: nothing to warn about
    with warns_at_test_line("no training data in its buffer"):
        loaded.fit_online(ENV, 3)
    assert len(loaded.buffer_) == 3
    data = load_dataset("pendulum-medium-replay-v0")
    reloaded = sk_o2o.load(tmp_path / "policy.safetensors")
    # partial_fit likewise, unless it only fills the buffer
    with warns_at_test_line("partial_fit trains on these 5 transitions alone"):
        sk_o2o.load(tmp_path / "policy.safetensors").partial_fit(
            data.observations[:5],
            data.actions[:5],
            rewards=data.rewards[:5],
            next_observations=data.next_observations[:5],
            terminals=data.terminals[:5],
        )
    reloaded.partial_fit(
        data.observations,
        data.actions,
        rewards=data.rewards,
        next_observations=data.next_observations,
        terminals=data.terminals,
        n_updates=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reloaded.fit_online(ENV, 3)
        policy.fit_online(ENV, 3)


class RecordResets(gymnasium.Wrapper):
    """Keeps every initial observation."""

    def __init__(self, env):
        super().__init__(env)
        self.starts = []

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.starts.append(np.asarray(obs).copy())
        return obs, info


def test_successive_fit_online_calls_continue_one_run():
    """env_step counts across calls, a call starts with an evaluation unless
    the previous one ended with one, and seed=None draws new episodes from the
    estimator's generator (reproducibly under random_state)."""
    import sk_o2o

    def run(policy):
        env = RecordResets(gymnasium.make(ENV, max_episode_steps=20))
        evaluation = {
            "eval_interval": 20,
            "n_eval_episodes": 1,
            "eval_env": gymnasium.make(ENV, max_episode_steps=20),
        }
        for n_steps in (30, 30, 10):
            policy.fit_online(env, n_steps, **evaluation)
        return env.starts

    policy = _tiny_policy(log_interval=10)
    starts = run(policy)
    online = [h for h in policy.history_ if h["phase"].startswith("online")]
    steps = {
        phase: [h["env_step"] for h in online if h["phase"] == phase]
        for phase in ("online", "online_eval", "online_episode")
    }
    assert steps["online_eval"] == [0, 20, 30, 50, 60]  # 30: the 2nd call's start
    assert steps["online_episode"] == [20, 50]  # each call starts a new episode
    assert steps["online"] == list(range(10, 71, 10))
    assert policy.n_env_steps_ == 70
    # Each call's first reset is a new episode: no replay of the same starts.
    firsts = [starts[0], starts[2], starts[4]]
    assert not np.allclose(firsts[0], firsts[1]) and not np.allclose(
        firsts[1], firsts[2]
    )
    np.testing.assert_array_equal(
        np.stack(run(_tiny_policy(log_interval=10))), np.stack(starts)
    )
    # The count survives a safe round trip.
    loaded = sk_o2o.load(_saved(policy))
    assert loaded.n_env_steps_ == 70


def _saved(policy):
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp()) / "policy.safetensors"
    policy.save(path)
    return path


def test_a_fit_online_that_fails_before_its_first_step_changes_nothing():
    policy = _tiny_policy(log_interval=50, action_bounds=(-2.0, 2.0))
    data = {k: v[:3] for k, v in _pendulum_rows().items()}
    policy.partial_fit(data)  # 3 steps pending, not yet recorded
    state = policy.generator_.get_state()
    history, pending = list(policy.history_), policy._partial_fit_log
    wrong = gymnasium.make("MountainCarContinuous-v0")  # 2 features, not 3
    with pytest.raises(ValueError, match="features"):
        policy.fit_online(ENV, 5, eval_interval=5, eval_env=wrong)
    assert torch.equal(policy.generator_.get_state(), state)
    assert policy.history_ == history and policy._partial_fit_log == pending
    policy.fit_online(ENV, 5)  # and it goes on from there
    assert policy.history_[len(history)]["phase"] == "partial_fit"


def _pendulum_rows():
    from sk_o2o.datasets import load_dataset

    data = load_dataset("pendulum-medium-replay-v0")
    return {k: np.asarray(data[k]) for k in D4RL_KEYS}


def test_fit_online_progress_bar_shows_losses_and_the_evaluation(capsys):
    policy = _tiny_policy(log_interval=5, verbose=1)
    policy.fit_online(ENV, 10, eval_interval=10, n_eval_episodes=1)
    shown = capsys.readouterr().err
    assert "online: 100%" in shown
    assert "critic_loss=" in shown and "eval_return=" in shown


def test_fit_online_acts_and_stores_inside_the_env_action_space():
    # Bounds wider than Pendulum's [-2, 2]: the policy's actions reach ±5.
    policy = _tiny_policy(action_bounds=(-5.0, 5.0))
    env = RecordActions(gymnasium.make(ENV))
    n_before = len(policy.buffer_)
    policy.fit_online(env, 300, n_updates_per_step=0)
    executed = np.concatenate(env.actions)
    assert executed.min() == -2.0 and executed.max() == 2.0  # clipped, not ±5
    stored = policy.action_scaler_.inverse_transform(
        policy.buffer_.rows(n_before)["actions"].numpy().astype(np.float64)
    )
    np.testing.assert_allclose(stored[:, 0], executed, atol=1e-5)
    with pytest.raises(ValueError, match="Box"):
        policy.fit_online("CartPole-v1", 5)
    env = gymnasium.make(ENV)
    env.action_space = gymnasium.spaces.Box(-2.0, 2.0, (2,))
    with pytest.raises(ValueError, match="env actions have shape"):
        policy.fit_online(env, 5)
    assert len(policy.buffer_) == n_before + 300


# Checked by planting bugs (a mutation review): episode ends, seeds and what
# fit_online stores.
class _EndsAfter(gymnasium.Env):
    """3-feature, 1-D-action env whose episodes end after ``length`` steps by
    termination (``truncate_too``: also truncated on that same step)."""

    observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (3,), np.float32)
    action_space = gymnasium.spaces.Box(-2.0, 2.0, (1,), np.float32)

    def __init__(self, length=4, truncate_too=False):
        self.length, self.truncate_too, self.t = length, truncate_too, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.np_random.normal(size=3).astype(np.float32), {}

    def step(self, action):
        self.t += 1
        done = self.t >= self.length
        obs = self.np_random.normal(size=3).astype(np.float32)
        return obs, 1.0, done, done and self.truncate_too, {}


@pytest.mark.parametrize("truncate_too", [False, True])
def test_collect_transitions_marks_a_terminal_end_with_terminals_only(truncate_too):
    """Catches a bug (last-step timeout set on a terminal) and another (a step both
    terminated and truncated flagged twice)."""
    data = collect_transitions(
        zero_torque, _EndsAfter(4, truncate_too), n_steps=8, seed=0
    )
    np.testing.assert_array_equal(np.flatnonzero(data["terminals"]), [3, 7])
    assert not data["timeouts"].any()


def test_evaluate_policy_seeds_episode_i_with_seed_plus_i():
    """Catches a bug (every episode reset with the same seed)."""
    returns = evaluate_policy(zero_torque, ENV, n_episodes=3, seed=4)
    for i in range(3):
        alone = evaluate_policy(zero_torque, ENV, n_episodes=1, seed=4 + i)
        assert returns[i] == alone[0]
    assert len(set(returns.tolist())) == 3


def test_collect_transitions_seeds_episode_i_with_seed_plus_i():
    """Catches a bug (every episode after the first replays the first's start)."""
    env = gymnasium.make(ENV, max_episode_steps=5)
    data = collect_transitions(zero_torque, env, n_steps=15, seed=7)
    for i, start in enumerate((0, 5, 10)):
        expected, _ = gymnasium.make(ENV).reset(seed=7 + i)
        np.testing.assert_allclose(data["observations"][start], expected, rtol=1e-6)


def _pendulum_policy(make_policy, make_transitions, **params):
    data = make_transitions(n=40, obs_dim=3, act_dim=1, low=-2.0, high=2.0)
    return make_policy(action_bounds=(-2.0, 2.0), **params).fit(data)


def test_fit_online_stores_truncations_as_not_done_and_restarts_episodes(
    make_policy, make_transitions
):
    """Catches a bug (a truncation stored as terminal), another (after an episode end
    the next transition starts from the old final state, not the reset one) and
    another (episode_return not reset between episodes)."""
    policy = _pendulum_policy(make_policy, make_transitions)
    n_before = len(policy.buffer_)
    env = gymnasium.make(ENV, max_episode_steps=5)
    policy.fit_online(env, 10, n_updates_per_step=0, seed=0)
    rows = policy.buffer_.rows(n_before)
    assert len(rows["dones"]) == 10 and not rows["dones"].any()  # only truncated
    obs, next_obs = rows["observations"], rows["next_observations"]
    inner = [0, 1, 2, 3, 5, 6, 7, 8]
    torch.testing.assert_close(obs[[i + 1 for i in inner]], next_obs[inner])
    assert not torch.allclose(obs[5], next_obs[4])  # a reset, not a continuation
    episodes = [h for h in policy.history_ if h["phase"] == "online_episode"]
    assert [h["env_step"] for h in episodes] == [5, 10]
    rewards = rows["rewards"].double().numpy() / policy.reward_scale_
    np.testing.assert_allclose(
        [h["episode_return"] for h in episodes],
        [rewards[:5].sum(), rewards[5:].sum()],
        rtol=1e-5,
    )


def test_fit_online_stores_terminations_as_done(make_policy, make_transitions):
    """Complements the truncation test: a terminated step is stored as done."""
    policy = _pendulum_policy(make_policy, make_transitions)
    n_before = len(policy.buffer_)
    policy.fit_online(_EndsAfter(4), 8, n_updates_per_step=0, seed=0)
    dones = policy.buffer_.rows(n_before)["dones"].numpy()
    np.testing.assert_array_equal(np.flatnonzero(dones), [3, 7])


@pytest.mark.parametrize("per_step", [0, 3])
def test_fit_online_takes_n_updates_per_step(make_policy, make_transitions, per_step):
    """Catches a bug (n_updates_per_step ignored: one update per step)."""
    policy = _pendulum_policy(make_policy, make_transitions)
    before = policy.n_updates_
    policy.fit_online(ENV, 4, n_updates_per_step=per_step, seed=0)
    assert policy.n_updates_ == before + 4 * per_step
    assert policy.n_env_steps_ == 4


def test_fit_online_evaluates_on_episodes_seeded_apart_from_training(
    make_policy, make_transitions
):
    """Catches a bug (evaluation episodes seeded like the training episodes)."""
    from sk_o2o.rl.base import ONLINE_EVAL_SEED_OFFSET

    policy = _pendulum_policy(make_policy, make_transitions)
    policy.fit_online(ENV, 0, eval_interval=1, n_eval_episodes=2, seed=3)
    (record,) = [h for h in policy.history_ if h["phase"] == "online_eval"]
    expected = evaluate_policy(
        policy, ENV, n_episodes=2, seed=3 + ONLINE_EVAL_SEED_OFFSET
    )
    assert record["eval_return"] == pytest.approx(float(np.mean(expected)))
    assert record["eval_return"] != pytest.approx(
        float(np.mean(evaluate_policy(policy, ENV, n_episodes=2, seed=3)))
    )


def test_fit_online_warns_when_the_data_bounds_cut_the_action_space():
    import gymnasium

    from sk_o2o import IQLPolicy
    from sk_o2o.datasets import load_dataset

    data = dict(load_dataset("pendulum-medium-replay-v0"))
    data["actions"] = np.clip(data["actions"], -1.0, 1.0)  # Pendulum's are ±2
    tiny = {"n_steps": 2, "hidden_sizes": (8,), "device": "cpu", "random_state": 0}
    policy = IQLPolicy(**tiny).fit(data)
    with warns_at_test_line(r"leave out part of env's action space.*dimensions \[0\]"):
        policy.fit_online(ENV, 2)
    with warnings.catch_warnings():  # evaluation only: nothing to warn about
        warnings.simplefilter("error")
        policy.fit_online(ENV, 0)
    # one-sided Box bounds are checked on their finite side
    half_open = gymnasium.spaces.Box(
        np.array([-2.0], np.float32), np.array([np.inf], np.float32)
    )
    with warns_at_test_line(r"dimensions \[0\]"):
        policy._warn_if_bounds_narrower_than(half_open)
    # the data's own range covers Pendulum's: no warning, nor with explicit bounds
    bounded = IQLPolicy(action_bounds=gymnasium.make(ENV).action_space, **tiny)
    for policy in (
        IQLPolicy(**tiny).fit(load_dataset("pendulum-medium-replay-v0")),
        bounded.fit(data),
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            policy.fit_online(ENV, 2)


def test_evaluate_policy_names_a_wrong_action_width():
    with pytest.raises(ValueError, match=r"returned 3 action values .* shape \(1,\)"):
        evaluate_policy(lambda obs: np.zeros((1, 3)), ENV, n_episodes=1)
