"""The example scripts run end to end, at their smallest settings.

Each script runs in a subprocess, as a user runs it, with a short budget: what
is checked is that it finishes and writes what it says it writes. Its figures at
the default budgets are quoted in the docs (and the quickstart's is checked by
the README's first command).
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("gymnasium")
pytest.importorskip("matplotlib")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture
def run(run_script):
    def run(script: str, *args: str, cwd: Path) -> str:
        return run_script(EXAMPLES / script, *args, cwd=cwd)

    return run


def test_quickstart(run, tmp_path):
    out = run("quickstart.py", "--n-steps", "50", "--out", "q", cwd=tmp_path)
    assert "IQLPolicy" in out and "saved and reloaded" in out
    assert {p.name for p in (tmp_path / "q").iterdir()} == {
        "iql_pendulum.safetensors",
        "losses.png",
    }


def test_famo2o_offline_to_online(run, tmp_path):
    out = run(
        "famo2o_offline_to_online.py",
        *("--offline-steps", "100", "--online-steps", "200"),
        *("--eval-interval", "100", "--out", "f"),
        cwd=tmp_path,
    )
    assert "chosen β" in out
    assert {p.name for p in (tmp_path / "f").iterdir()} == {
        "return_curve.png",
        "balance_vs_quality.png",
    }


def test_model_selection(run, tmp_path):
    out = run("model_selection.py", "--n-steps", "20", cwd=tmp_path)
    assert "best:" in out and "Pipeline (angle feature + IQL), best:" in out


def test_unlearning(run, tmp_path):
    out = run("unlearning.py", "--out", "u", cwd=tmp_path)
    assert "FAMR moved the weights" in out
    assert (tmp_path / "u" / "unlearning.png").is_file()
