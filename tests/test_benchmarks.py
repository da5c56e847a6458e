"""The benchmark scripts run end to end, at tiny budgets.

Each runs in a subprocess as documented in benchmarks/README.md, so that a
session with a GPU, or a longer run, finds them working. Only that they finish
and report what they say is checked: their figures are measurements, never
asserted here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("d3rlpy")
pytest.importorskip("gymnasium")
pytest.importorskip("matplotlib")

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def run(run_script):
    def run(script: str, *args: str, cwd: Path) -> str:
        return run_script(BENCHMARKS / script, *args, cwd=cwd)

    return run


def _last_json(out: str) -> dict:
    """The JSON object printed last, with indent (other lines may be logs)."""
    lines = out.splitlines()
    start = max(i for i, line in enumerate(lines) if line == "{")
    return json.loads("\n".join(lines[start:]))


def test_iql_throughput_reports_rates_and_ratios(run, tmp_path):
    out = run(
        "iql_throughput.py",
        *("--steps", "10", "--transitions", "2000", "--repeats", "1"),
        cwd=tmp_path,
    )
    result = _last_json(out)
    for key in ("sk_o2o_iql", "sk_o2o_famo2o", "d3rlpy_iql"):
        assert result[f"{key}_steps_per_s"] > 0
    assert result["ratio_iql"] > 0 and result["ratio_famo2o"] > 0


def test_memory_reports_both_libraries(run, tmp_path):
    out = run("memory_1m.py", "--transitions", "5000", cwd=tmp_path)
    result = _last_json(out)
    assert result["transitions"] == 5000
    for lib in ("sk_o2o", "d3rlpy"):
        assert result[lib]["raw_MiB"] > 0


def test_famo2o_returns_writes_its_table_and_curves(run, tmp_path):
    out = run(
        "famo2o_returns.py",
        *("--datasets", "pendulum-medium-v0", "--seeds", "0"),
        *("--offline-steps", "20", "--online-steps", "40", "--eval-interval", "20"),
        *("--episodes", "1", "--hidden", "16", "16", "--out", "out"),
        cwd=tmp_path,
    )
    for agent in ("FamO2O (ours)", "IQL (ours)", "IQL (d3rlpy)"):
        assert agent in out
    assert {p.name for p in (tmp_path / "out").iterdir()} == {
        "famo2o_returns.json",
        "pendulum-medium-v0.png",
    }


def test_famo2o_offline_seeds_writes_its_results(run, tmp_path):
    run(
        "famo2o_offline_seeds.py",
        *("--dataset", "pendulum-medium-v0", "--steps", "20", "--seeds", "0"),
        *("--episodes", "1", "--out", "out"),
        cwd=tmp_path,
    )
    assert (tmp_path / "out" / "famo2o_offline_seeds.json").is_file()


def test_iql_online_stall_writes_its_results(run, tmp_path):
    run(
        "iql_online_stall.py",
        *("--dataset", "pendulum-medium-replay-v0", "--offline-steps", "20"),
        *("--online-steps", "40", "--out", "out"),
        cwd=tmp_path,
    )
    assert len(list((tmp_path / "out").glob("iql_online_stall_*.json"))) == 1


def test_unlearning_benchmark_writes_its_results(run, tmp_path):
    run(
        "unlearning.py",
        *("--datasets", "digits", "--scenarios", "class", "--out", "out"),
        cwd=tmp_path,
    )
    assert {p.name for p in (tmp_path / "out").iterdir()} >= {
        "unlearning.json",
        "famr_tradeoff.png",
    }
