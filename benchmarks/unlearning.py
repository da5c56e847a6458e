"""Forgetting benchmark: FAMR against every baseline, retraining as the reference.

For each dataset and scenario, one MLP is trained (the "original"), and every
method starts from a copy of it (``FrozenEstimator``): retraining on the retain
set, FAMR, fine-tuning, NegGrad, NegGrad+, random relabelling and SSD. Reported:
accuracy on the forget set, the retain set and the test set (for class
forgetting: the test rows of the other classes), the membership-inference score
(logistic regression on the entropy, members = retain, non-members = test,
applied to the forget set) and the wall time of ``unlearn`` as a ratio to
retraining's. Then FAMR's trade-off as ``anchor_strength`` varies, plotted.
Class forgetting also runs FAMR with ``forget_target="renormalized"`` (the
trained model's prediction without the forgotten class as the target, our
extension of the paper's uniform one), in the table and in the trade-off.

Scenarios: ``class`` forgets one class (``--forget-class``); ``random`` forgets
``--forget-fraction`` of the training rows drawn at random.

Datasets: ``digits`` (scikit-learn's 1,797 8×8 digits, 70/30 split) and
``synthetic`` (``make_classification``: 60,000 samples, 40 features, 10 classes,
50,000 for training). Features are standardised.

    python benchmarks/unlearning.py --datasets digits synthetic --out unlearning_output
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits, make_classification
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from sk_o2o.unlearning import (
    FAMRUnlearner,
    FinetuneUnlearner,
    NegGradUnlearner,
    RandomLabelUnlearner,
    RetrainUnlearner,
    SSDUnlearner,
    evaluate_unlearning,
    make_classifier_net,
)

METHODS = {
    "retrain": (RetrainUnlearner, {}),
    "FAMR": (FAMRUnlearner, {}),
    "FAMR renorm.": (FAMRUnlearner, {"forget_target": "renormalized"}),
    "finetune": (FinetuneUnlearner, {}),
    "NegGrad": (NegGradUnlearner, {"lr": 1e-3}),
    "NegGrad+": (NegGradUnlearner, {"lr": 1e-3, "retain_weight": 0.5}),
    "random labels": (RandomLabelUnlearner, {}),
    "SSD": (SSDUnlearner, {}),
}
CLASS_ONLY = {"FAMR renorm."}  # the renormalised target needs forgotten classes
ANCHORS = (1e-3, 1e-2, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0)
SOLVER_RECORD = ("n_steps", "n_evaluations", "converged", "stationarity")


def load(name: str, seed: int = 0):
    if name == "digits":
        X, y = load_digits(return_X_y=True)
        test_size = 0.3
    elif name == "synthetic":
        X, y = make_classification(
            n_samples=60_000,
            n_features=40,
            n_informative=20,
            n_redundant=10,
            n_classes=10,
            n_clusters_per_class=2,
            class_sep=1.5,
            random_state=seed,
        )
        test_size = 10_000
    else:
        raise ValueError(f"unknown dataset {name!r}")
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=test_size, random_state=seed, stratify=y
    )
    scaler = StandardScaler().fit(X_train)
    return (
        scaler.transform(X_train).astype(np.float32),
        scaler.transform(X_test).astype(np.float32),
        y_train,
        y_test,
    )


def split(scenario: str, X_train, y_train, X_test, y_test, args, rng):
    """Forget mask on the training rows and the test rows to evaluate on."""
    if scenario == "class":
        forget = y_train == args.forget_class
        test = y_test != args.forget_class
    else:
        forget = np.zeros(len(y_train), dtype=bool)
        n = round(args.forget_fraction * len(y_train))
        forget[rng.choice(len(y_train), n, replace=False)] = True
        test = np.ones(len(y_test), dtype=bool)
    return forget, test


def unlearn(model, scenario, X_train, y_train, forget, args):
    if scenario == "class":
        model.unlearn_classes([args.forget_class], X_train, y_train)
    else:
        model.unlearn(
            X_train[forget],
            y_train[forget],
            X_retain=X_train[~forget],
            y_retain=y_train[~forget],
        )
    return model.unlearning_history_[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["digits", "synthetic"])
    parser.add_argument("--scenarios", nargs="+", default=["class", "random"])
    parser.add_argument("--forget-class", type=int, default=3)
    parser.add_argument("--forget-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("unlearning_output"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)

    results: dict = {
        "machine": f"{platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads",
        "runs": {},
    }
    for dataset in args.datasets:
        X_train, X_test, y_train, y_test = load(dataset, args.seed)
        n_classes = len(np.unique(y_train))
        net = make_classifier_net(
            module__n_features=X_train.shape[1], module__n_classes=n_classes
        )
        start = time.perf_counter()
        with torch.random.fork_rng():
            torch.manual_seed(args.seed)
            net.fit(X_train, y_train)
        fit_time = time.perf_counter() - start
        print(f"\n{dataset}: trained the original MLP in {fit_time:.1f} s", flush=True)
        for scenario in args.scenarios:
            rng = np.random.default_rng(args.seed)
            forget, test = split(scenario, X_train, y_train, X_test, y_test, args, rng)
            sets = (
                (X_train[forget], y_train[forget]),
                (X_train[~forget], y_train[~forget]),
                (X_test[test], y_test[test]),
            )
            rows = {}
            original = FAMRUnlearner(FrozenEstimator(net)).fit(X_train, y_train)
            rows["original"] = {**evaluate_unlearning(original, *sets), "time_s": 0.0}
            for name, (cls, params) in METHODS.items():
                if scenario != "class" and name in CLASS_ONLY:
                    continue
                model = cls(FrozenEstimator(net), random_state=args.seed, **params)
                model.fit(X_train, y_train)
                record = unlearn(model, scenario, X_train, y_train, forget, args)
                rows[name] = {
                    **evaluate_unlearning(model, *sets),
                    "time_s": record["time_s"],
                    # how the solver got there: iterations, passes, stopped by tol?
                    **{k: record[k] for k in SOLVER_RECORD if k in record},
                }
            retrain_time = rows["retrain"]["time_s"]
            for row in rows.values():
                row["time_ratio"] = row["time_s"] / retrain_time
            targets = (
                ("uniform", "renormalized") if scenario == "class" else ("uniform",)
            )
            tradeoffs = {}
            for target in targets:
                tradeoffs[target] = []
                for lam in ANCHORS:
                    model = FAMRUnlearner(
                        FrozenEstimator(net),
                        anchor_strength=lam,
                        forget_target=target,
                        random_state=args.seed,
                    ).fit(X_train, y_train)
                    record = unlearn(model, scenario, X_train, y_train, forget, args)
                    tradeoffs[target].append(
                        {
                            "anchor_strength": lam,
                            **evaluate_unlearning(model, *sets),
                            "parameter_distance": record["parameter_distance"],
                            **{k: record[k] for k in SOLVER_RECORD},
                        }
                    )
            key = f"{dataset}/{scenario}"
            results["runs"][key] = {
                "n_train": len(X_train),
                "n_forget": int(forget.sum()),
                "original_fit_s": fit_time,
                "methods": rows,
                "famr_tradeoff": tradeoffs["uniform"],
            }
            if "renormalized" in tradeoffs:
                results["runs"][key]["famr_tradeoff_renormalized"] = tradeoffs[
                    "renormalized"
                ]
            print(f"\n{key}: {int(forget.sum())} of {len(X_train)} rows forgotten")
            header = (
                "method",
                "forget",
                "retain",
                "test",
                "MIA",
                "time s",
                "÷ retrain",
            )
            print("{:14s}{:>8s}{:>8s}{:>8s}{:>7s}{:>9s}{:>11s}".format(*header))
            for name, r in rows.items():
                print(
                    f"{name:14s}{r['forget_accuracy']:8.3f}{r['retain_accuracy']:8.3f}"
                    f"{r['test_accuracy']:8.3f}{r['mia']:7.3f}{r['time_s']:9.3f}"
                    f"{r['time_ratio']:11.4f}",
                    flush=True,
                )
            famr = rows["FAMR"]
            print(
                f"FAMR solver: {famr['n_steps']} iterations, {famr['n_evaluations']} "
                f"passes over the forget set, converged: {famr['converged']}"
            )
            for target, tradeoff in tradeoffs.items():
                print(
                    f"FAMR trade-off, {target} target "
                    "(anchor_strength: forget / retain / test / MIA):"
                )
                for t in tradeoff:
                    print(
                        f"  {t['anchor_strength']:8g}: {t['forget_accuracy']:.3f} / "
                        f"{t['retain_accuracy']:.3f} / {t['test_accuracy']:.3f} / "
                        f"{t['mia']:.3f} ({t['n_steps']} iterations, "
                        f"converged: {t['converged']})",
                        flush=True,
                    )
    (args.out / "unlearning.json").write_text(json.dumps(results, indent=1))
    plot(results, args.out)


def plot(results: dict, out: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    runs = results["runs"]
    fig, axes = plt.subplots(
        1, len(runs), figsize=(4.2 * len(runs), 3.6), squeeze=False
    )
    metrics = {"forget_accuracy": "o", "retain_accuracy": "s", "test_accuracy": "^"}
    for ax, (key, run) in zip(axes[0], runs.items(), strict=True):
        uniform = run["famr_tradeoff"]
        renormalized = run.get("famr_tradeoff_renormalized")
        lams = [r["anchor_strength"] for r in uniform]
        for metric, marker in metrics.items():
            name = metric.split("_")[0]
            values = [r[metric] for r in uniform]
            (line,) = ax.plot(lams, values, marker + "-", label=name)
            if renormalized is not None:
                ax.plot(
                    lams,
                    [r[metric] for r in renormalized],
                    marker + "--",
                    color=line.get_color(),
                    mfc="none",
                    label=f"{name}, renormalized",
                )
            reference = run["methods"]["retrain"][metric]
            ax.axhline(reference, ls=":", color=line.get_color(), lw=1)
        ax.set(xscale="log", xlabel="anchor_strength λ", ylabel="accuracy", title=key)
        ax.set_ylim(-0.02, 1.02)
    # one legend under the panels: the most complete panel's lines
    handles, labels = max(
        (ax.get_legend_handles_labels() for ax in axes[0]), key=lambda h: len(h[0])
    )
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize="small")
    fig.suptitle("FAMR as anchor_strength varies (dotted: retraining)", y=0.99)
    fig.tight_layout(rect=(0, 0.08, 1, 0.97))
    fig.savefig(out / "famr_tradeoff.png", dpi=100)


if __name__ == "__main__":
    main()
