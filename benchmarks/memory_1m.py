"""Peak memory of fitting on a 1M-transition dataset, against its raw size.

Each library runs in a fresh subprocess: the transitions (Hopper-sized, float32)
are created first, then the process's peak resident memory is read before and
after ``fit`` (a few gradient steps: the cost measured is holding the data).
The same run on 1,000 transitions gives the fixed cost of the torch runtime and
the networks; the difference is what the data costs, reported against its size.

    python benchmarks/memory_1m.py [--transitions 1000000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys
import numpy as np
sys.path.insert(0, {root!r})
from benchmarks.iql_throughput import make_data
data = make_data({n})
raw = sum(v.nbytes for v in data.values())
def peak():  # ru_maxrss is in KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
import torch
if {lib!r} == "sk_o2o":
    from sk_o2o import IQLPolicy
    before = peak()
    IQLPolicy(n_steps=10, device="cpu", random_state=0).fit(data)
else:
    import d3rlpy
    before = peak()
    dataset = d3rlpy.dataset.MDPDataset(
        data["observations"], data["actions"], data["rewards"], data["terminals"]
    )
    d3rlpy.algos.IQLConfig().create(device="cpu:0").fit(
        dataset, n_steps=10, n_steps_per_epoch=10, show_progress=False,
        logger_adapter=d3rlpy.logging.NoopAdapterFactory(),
    )
print(json.dumps({{"raw": raw, "extra": peak() - before}}))
"""


def measure(lib: str, n: int, root: str) -> dict:
    code = CHILD.format(root=root, n=n, lib=lib)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--transitions", type=int, default=1_000_000)
    parser.add_argument("--libraries", nargs="+", default=["sk_o2o", "d3rlpy"])
    args = parser.parse_args()
    root = str(__import__("pathlib").Path(__file__).resolve().parents[1])
    mib = 2**20
    results = {}
    for lib in args.libraries:
        r = measure(lib, args.transitions, root)
        fixed = measure(lib, 1000, root)["extra"]
        results[lib] = {
            "raw_MiB": round(r["raw"] / mib, 1),
            "peak_extra_MiB": round(r["extra"] / mib, 1),
            "fixed_runtime_MiB": round(fixed / mib, 1),
            "data_cost_over_raw": round((r["extra"] - fixed) / r["raw"], 2),
        }
    print(json.dumps({"transitions": args.transitions, **results}, indent=2))


if __name__ == "__main__":
    main()
