"""The Python code blocks of README.md and docs/ run as written, only shorter.

A page's blocks run in order in one namespace, as a reader would run them, in a
temporary directory. Training lengths are cut down by the substitutions in
``SHORTER`` so that every page takes seconds: what is checked is that the
documented calls exist and accept what the pages pass them. The figures are
checked elsewhere (examples/quickstart.py and the slow tests). A block preceded
by ``<!-- not run -->`` (a signature, say) is only shown, not run.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import sklearn

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCK = re.compile(r"(<!-- not run -->\n)?```python\n(.*?)^```", re.S | re.M)

SHORTER = [
    (r"n_steps=[\d_]+", "n_steps=20"),
    (r"n_episodes=\d+", "n_episodes=1"),
    (r"eval_interval=\d+", "eval_interval=20"),
    (r'fit_online\("Pendulum-v1", \d+', 'fit_online("Pendulum-v1", 40'),
]


def _blocks(page: Path) -> list[str]:
    """The page's runnable Python blocks, shortened, at their lines in the page."""
    text = page.read_text(encoding="utf-8")
    blocks = []
    for match in BLOCK.finditer(text):
        not_run, code = match.groups()
        if not not_run:
            for pattern, replacement in SHORTER:
                code = re.sub(pattern, replacement, code)
            # blank lines first, so that a traceback names the page's own line
            blocks.append("\n" * text.count("\n", 0, match.start(2)) + code)
    return blocks


def _setup(page: Path) -> dict:
    """What a page takes as already there: a data file, a fitted policy."""
    from sk_o2o import IQLPolicy
    from sk_o2o.datasets import load_dataset

    if page.name == "data.md":
        data = load_dataset("pendulum-medium-replay-v0")
        np.savez("my-dataset.npz", **{k: np.asarray(v) for k, v in data.items()})
    if page.name == "devices-and-persistence.md":
        policy = IQLPolicy(n_steps=20, batch_size=16, hidden_sizes=(16,))
        return {"policy": policy.fit(load_dataset("pendulum-medium-replay-v0"))}
    return {}


def test_every_page_block_compiles():
    blocks = [(page, code) for page in PAGES for code in _blocks(page)]
    assert len(blocks) >= 10  # the regex still finds the pages' blocks
    for page, code in blocks:
        compile(code, str(page), "exec")


@pytest.mark.parametrize(
    "page",
    [page for page in PAGES if _blocks(page)],
    ids=lambda page: str(page.relative_to(ROOT)),
)
def test_page_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    with sklearn.config_context():  # a page may turn metadata routing on
        namespace = _setup(page)
        for code in _blocks(page):
            exec(compile(code, str(page), "exec"), namespace)
