"""Tests of sk_o2o.datasets: shipped datasets, loaders, helpers and the builder."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.utils import Bunch

from conftest import warns_at_test_line
from sk_o2o.data import D4RL_KEYS
from sk_o2o.datasets import (
    episode_ids,
    episode_returns,
    get_data_home,
    list_datasets,
    load_dataset,
    normalized_score,
)

SHIPPED = [
    "pendulum-random-v0",
    "pendulum-medium-v0",
    "pendulum-medium-replay-v0",
    "pendulum-expert-v0",
    "pendulum-medium-expert-v0",
]
# Mean episode return each shipped quality must have (Pendulum-v1, 200 steps).
RETURN_RANGES = {
    "random": (-1500.0, -1000.0),
    "medium": (-1000.0, -300.0),
    "medium-replay": (-1400.0, -500.0),
    "expert": (-250.0, -100.0),
    "medium-expert": (-700.0, -150.0),
}


@pytest.fixture(scope="module", params=SHIPPED)
def shipped(request):
    return load_dataset(request.param)


@pytest.fixture(autouse=True)
def _empty_data_home(tmp_path, monkeypatch):
    """Keep a user's cached datasets out of the tests."""
    monkeypatch.setenv("SK_O2O_DATA", str(tmp_path / "data_home"))


def test_list_datasets_has_shipped():
    assert set(SHIPPED) <= set(list_datasets())


def test_shipped_dataset_shapes_and_dtypes(shipped):
    assert isinstance(shipped, Bunch)
    n = len(shipped.observations)
    assert n > 1000
    assert shipped.observations.shape == (n, 3)
    assert shipped.next_observations.shape == (n, 3)
    assert shipped.actions.shape == (n, 1)
    assert shipped.rewards.shape == (n,)
    for key in ("observations", "next_observations", "actions", "rewards"):
        assert shipped[key].dtype == np.float32
        assert np.isfinite(shipped[key]).all()
    assert shipped.terminals.dtype == bool and shipped.timeouts.dtype == bool
    assert shipped.episode_ids.dtype == np.int64 and shipped.episode_ids.shape == (n,)
    assert shipped.env_id == "Pendulum-v1"
    assert shipped.quality == shipped.name.removeprefix("pendulum-").removesuffix("-v0")
    assert shipped.ref_min_score < shipped.ref_max_score
    assert np.all(np.abs(shipped.actions) <= 2.0)
    assert np.all((shipped.rewards <= 0) & (shipped.rewards >= -16.3))


def test_shipped_episodes_delimited(shipped):
    ends = shipped.terminals | shipped.timeouts
    assert ends[-1], "the last episode must be delimited"
    assert not shipped.terminals.any()  # Pendulum only times out
    ids = shipped.episode_ids
    assert ids[0] == 0 and np.all(np.diff(ids) >= 0) and np.all(np.diff(ids) <= 1)
    assert ids[-1] + 1 == ends.sum()
    # episodes are at most 200 steps (the time limit), whole ones exactly 200
    lengths = np.bincount(ids)
    assert lengths.max() <= 200
    # inside an episode the next observation is the following observation
    inner = np.flatnonzero(~ends[:-1])
    np.testing.assert_array_equal(
        shipped.next_observations[inner], shipped.observations[inner + 1]
    )


def test_shipped_returns_in_expected_range(shipped):
    returns = episode_returns(shipped.rewards, shipped.terminals, shipped.timeouts)
    whole = returns[np.bincount(shipped.episode_ids) == 200]
    low, high = RETURN_RANGES[shipped.quality]
    assert low <= whole.mean() <= high, whole.mean()


def test_reference_scores_consistent_across_qualities():
    refs = {(d.ref_min_score, d.ref_max_score) for d in map(load_dataset, SHIPPED)}
    assert len(refs) == 1
    ref_min, ref_max = refs.pop()
    assert -1500 < ref_min < -1000 and -250 < ref_max < -100


def test_quality_ordering():
    mean = {
        q: episode_returns(d.rewards, d.terminals, d.timeouts).mean()
        for q, d in ((q, load_dataset(f"pendulum-{q}-v0")) for q in RETURN_RANGES)
    }
    assert mean["random"] < mean["medium"] < mean["expert"]
    assert mean["medium"] < mean["medium-expert"] < mean["expert"]


def test_medium_expert_is_medium_then_expert():
    medium = load_dataset("pendulum-medium-v0")
    expert = load_dataset("pendulum-expert-v0")
    both = load_dataset("pendulum-medium-expert-v0")
    for key in D4RL_KEYS:
        np.testing.assert_array_equal(
            both[key], np.concatenate([medium[key], expert[key]])
        )
    assert both.episode_ids[-1] == medium.episode_ids[-1] + expert.episode_ids[-1] + 1


def test_load_dataset_from_path_and_data_home(tmp_path):
    data = load_dataset("pendulum-medium-v0")
    path = tmp_path / "mine.npz"
    np.savez(
        path,
        **{k: data[k][:500] for k in D4RL_KEYS},
        env_id=data.env_id,
        quality="custom",
        ref_min_score=data.ref_min_score,
        ref_max_score=data.ref_max_score,
    )
    for name in (path, str(path)):
        loaded = load_dataset(name)
        assert loaded.name == "mine" and loaded.quality == "custom"
        np.testing.assert_array_equal(loaded.observations, data.observations[:500])
    # a name found in data_home
    assert "mine" in list_datasets(data_home=tmp_path)
    assert len(load_dataset("mine", data_home=tmp_path).rewards) == 500


def test_load_dataset_unknown_name_lists_available():
    with pytest.raises(ValueError, match="pendulum-medium-replay-v0"):
        load_dataset("hopper-nonexistent-v9")
    with pytest.raises(ValueError, match="does not exist"):
        load_dataset("/no/such/file.npz")
    with pytest.raises(TypeError, match="name"):
        load_dataset(3)


def test_load_dataset_rejects_incomplete_file(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, observations=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="lacks"):
        load_dataset(path)


def test_get_data_home(monkeypatch, tmp_path):
    monkeypatch.setenv("SK_O2O_DATA", str(tmp_path))
    assert get_data_home() == tmp_path
    monkeypatch.delenv("SK_O2O_DATA")
    assert get_data_home().parts[-3:] == (".cache", "sk_o2o", "datasets")
    assert get_data_home("~/x") == get_data_home("~/x").expanduser()


def test_normalized_score():
    assert normalized_score(-1200.0, -1200.0, -150.0) == pytest.approx(0.0)
    assert normalized_score(-150.0, -1200.0, -150.0) == pytest.approx(100.0)
    scores = normalized_score(np.array([-1200.0, -675.0]), -1200.0, -150.0)
    np.testing.assert_allclose(scores, [0.0, 50.0])
    data = load_dataset("pendulum-expert-v0")
    assert normalized_score(
        data.ref_max_score, data.ref_min_score, data.ref_max_score
    ) == pytest.approx(100.0)
    with pytest.raises(ValueError, match="different"):
        normalized_score(1.0, 5.0, 5.0)
    with pytest.raises(ValueError, match="finite"):
        normalized_score(1.0, np.nan, 5.0)


def test_episode_helpers_validate_input():
    with pytest.raises(ValueError, match="terminals"):
        episode_returns([1.0, 2.0], [0, 2])
    with pytest.raises(ValueError, match="timeouts"):
        episode_returns([1.0, 2.0], [0, 1], [0, 1, 0])
    with pytest.raises(ValueError, match="rewards"):
        episode_returns(np.zeros((2, 2)), [0, 1])
    with pytest.raises(ValueError, match="terminals"):
        episode_ids(np.zeros((2, 2)))
    assert episode_returns([], []).shape == (0,)
    assert episode_ids([]).shape == (0,)


def _reference(rewards, terminals, timeouts):
    """Loop implementation of episode ids and returns."""
    ids, returns, current, total = [], [], 0, 0.0
    for r, term, tout in zip(rewards, terminals, timeouts, strict=True):
        ids.append(current)
        total += r
        if term or tout:
            returns.append(total)
            current, total = current + 1, 0.0
    if len(rewards) and not (terminals[-1] or timeouts[-1]):
        returns.append(total)
    return np.array(ids, dtype=np.int64), np.array(returns)


@settings(max_examples=200, deadline=None)
@given(
    data=st.integers(0, 60).flatmap(
        lambda n: st.tuples(
            arrays(np.float64, n, elements=st.floats(-10, 10)),
            arrays(np.bool_, n),
            arrays(np.bool_, n),
        )
    )
)
def test_episode_ids_and_returns_property(data):
    rewards, terminals, timeouts = data
    ids = episode_ids(terminals, timeouts.astype(np.float32))
    returns = episode_returns(rewards, terminals.astype(int), timeouts)
    ref_ids, ref_returns = _reference(rewards, terminals, timeouts)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(returns, ref_returns, atol=1e-9)
    if len(rewards):
        assert ids[0] == 0 and np.all(np.diff(ids) >= 0)
        assert len(returns) == ids[-1] + 1
        np.testing.assert_allclose(
            np.bincount(ids, weights=rewards, minlength=len(returns)),
            returns,
            atol=1e-9,
        )


@pytest.mark.slow
def test_builder_end_to_end(tmp_path, monkeypatch):
    pytest.importorskip("d3rlpy")
    from sk_o2o.datasets.builder import QUALITIES, build_datasets, main

    tiny = {
        "n_sac_steps": 700,
        "n_transitions": 450,
        "random_steps": 300,
        "eval_interval": 200,
        "n_eval_episodes": 1,
        "n_ref_episodes": 2,
        "hidden_units": (16, 16),
        "batch_size": 32,
        "n_threads": 1,
    }
    paths = build_datasets("Pendulum-v1", out=tmp_path, **tiny)
    assert sorted(paths) == sorted(QUALITIES)
    assert set(list_datasets(data_home=tmp_path)) >= {
        f"pendulum-{q}-v0" for q in QUALITIES
    }
    sizes = {}
    for quality, path in paths.items():
        assert path.is_file() and path.parent == tmp_path
        data = load_dataset(path)
        assert data.quality == quality and data.env_id == "Pendulum-v1"
        assert (data.terminals | data.timeouts)[-1]
        assert np.isfinite(data.ref_min_score) and np.isfinite(data.ref_max_score)
        sizes[quality] = len(data.rewards)
    assert sizes["random"] == sizes["medium"] == sizes["expert"] == 450
    assert sizes["medium-expert"] == 900
    assert 300 <= sizes["medium-replay"] <= 700
    assert not (tmp_path / "d3rlpy_logs").exists()
    # built under shipped names, the built files are the ones found
    assert len(load_dataset("pendulum-medium-v0", data_home=tmp_path).rewards) == 450

    # the medium data do not depend on whether the expert data were asked for
    alone = build_datasets(
        "Pendulum-v1", out=tmp_path / "medium_only", qualities=["medium"], **tiny
    )
    for key in D4RL_KEYS:
        np.testing.assert_array_equal(
            load_dataset(alone["medium"])[key], load_dataset(paths["medium"])[key]
        )

    # the CLI, a subset of the qualities into another folder
    out = tmp_path / "cli"
    argv = ["--n-sac-steps", "400", "--n-transitions", "250", "--random-steps", "300"]
    argv += ["--eval-interval", "200", "--n-eval-episodes", "1", "--n-ref-episodes"]
    argv += ["1", "--hidden-units", "8", "8", "--batch-size", "16", "--quiet"]
    argv += ["--qualities", "random", "medium-replay", "--out", str(out)]
    # an expert no better than random (too short a training) is flagged
    from sk_o2o.datasets import builder

    monkeypatch.setattr(builder, "evaluate_policy", lambda *a, **k: np.zeros(1))
    with warns_at_test_line(r"return \(0\.0\) is not above"):
        assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "pendulum-medium-replay-v0.npz",
        "pendulum-random-v0.npz",
    ]


def test_builder_rejects_bad_arguments(tmp_path):
    pytest.importorskip("d3rlpy")
    from sk_o2o.datasets.builder import build_datasets, dataset_name

    assert dataset_name("Hopper-v5", "expert") == "hopper-expert-v0"
    with pytest.raises(ValueError, match="qualities"):
        build_datasets(qualities=["great"], out=tmp_path)
    with pytest.raises(ValueError, match="n_sac_steps"):
        build_datasets(n_sac_steps=0, out=tmp_path)
    with pytest.raises(ValueError, match="medium_fraction"):
        build_datasets(medium_fraction=1.5, out=tmp_path)
    with pytest.raises(ValueError, match="Box"):
        build_datasets("CartPole-v1", out=tmp_path)


def test_load_dataset_on_a_plain_d4rl_file_says_what_reads_it(tmp_path):
    data = load_dataset("pendulum-medium-replay-v0")
    path = tmp_path / "plain.npz"
    np.savez(path, **{key: data[key] for key in D4RL_KEYS})
    with pytest.raises(ValueError, match=r"lacks.*episode_ids"):
        load_dataset(path)


def test_a_dataset_in_data_home_shadows_the_shipped_one_of_that_name(
    tmp_path, make_transitions
):
    """Catches a bug (shipped data looked up before data_home); the same is checked
    by the slow builder test only."""
    data = make_transitions(n=7, obs_dim=3, act_dim=1)
    np.savez(
        tmp_path / "pendulum-medium-v0.npz",
        **data,
        env_id="Pendulum-v1",
        quality="medium",
        ref_min_score=-1200.0,
        ref_max_score=-150.0,
    )
    assert len(load_dataset("pendulum-medium-v0", data_home=tmp_path).rewards) == 7
    assert len(load_dataset("pendulum-medium-v0", data_home=tmp_path / "x").rewards) > 7


def test_builder_command_line_refuses_unknown_qualities(capsys):
    from sk_o2o.datasets.builder import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--qualities", "bogus"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'bogus'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "(default: 20000)" in capsys.readouterr().out
