"""One probe's C selection + refit + test, as `medprobe train` runs it: the adaptive grid against the full grid and
against scikit-learn, side by side in one run.

Data: the shared knee radiographs' EfficientNet-Lite0 features (layer 16, 1,280-d, KL grade, 5 classes) when a
store holding them is given (``--store``, after `medprobe extract -d knee -m efficientnet-lite0`), and a synthetic
problem of the OAI knee benchmark's shape (5,778 training rows x 1,280 features, 5 classes, patient groups)
built in code. Each method: grouped 5-fold CV over the 8-decade C grid by macro-F1, refit at the chosen C, test AUC.

    python benchmarks/bench_protocol.py                       # synthetic OAI-shaped problem
    python benchmarks/bench_protocol.py --store ./medprobe-store --dataset knee
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from rich.console import Console
from rich.table import Table
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from medprobe.trainer.defaults import DEFAULT_C_GRID
from medprobe.trainer.protocol import ProtocolTiming, cv_splits, fit_protocol, pick_C, stratify_key
from medprobe.trainer.solvers import get_solver


def synthetic(n_train: int, n_test: int, dim: int, seed: int = 0) -> tuple:
    """CNN-like features: non-negative, strongly correlated (64 latent factors), the 5 ordered classes (KL grades'
    frequencies) shifting a few factors; 2 rows per patient group. Correlated features make large C ill-conditioned,
    as real CNN features are."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    y = rng.choice(5, size=n, p=[0.4, 0.18, 0.25, 0.13, 0.04])
    factors = rng.normal(size=(n, 64))
    factors[:, :4] += 0.35 * y[:, None] * np.array([1.0, -0.6, 0.4, 0.2])
    X = np.clip(factors @ rng.normal(size=(64, dim)) / 8 + 0.3 * rng.normal(size=(n, dim)) + 0.5, 0, 6)
    groups = np.arange(n) // 2
    return X[:n_train], y[:n_train], groups[:n_train], X[n_train:], y[n_train:]


def from_store(url: str, dataset: str, layer: int) -> tuple:
    from medprobe.featurestore import FeatureStore
    from medprobe.trainer.data import load_task_data, read_features, resolve_task

    store = FeatureStore.open(url)
    task = resolve_task(store, "kl_grade", dataset)
    fs = store.sql("SELECT feature_set_id FROM feature_sets WHERE model_id = 'efficientnet-lite0'").column(0)[0].as_py()
    data = load_task_data(store, task, fs, [layer])
    X = read_features(store, fs, [layer], data.image_hashes)[layer].astype(np.float64)
    pool, test = data.rows(("train",)), data.rows(("val",))
    return X[pool], data.y[pool], data.groups[pool] if data.groups is not None else None, X[test], data.y[test]


def medprobe_run(Xtr, ytr, groups, Xte, yte, grid: str) -> dict:
    timing = ProtocolTiming()
    t0 = time.perf_counter()
    (result,) = fit_protocol(
        [Xtr], ytr, "multiclass", [str(i) for i in range(5)], get_solver("torch"), groups=groups,
        metric="macro_f1", grid=grid, timing=timing,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    proba = result.probe.predict_proba(Xte)
    auc = roc_auc_score(yte, proba, multi_class="ovr", average="macro")
    return {"seconds": seconds, "C": result.C, "auc": auc, "probes": timing.n_probes, "proba": proba}


def sklearn_run(Xtr, ytr, groups, Xte, yte) -> dict:
    """The same protocol with scikit-learn's lbfgs (its default tol, max_iter 10,000), fold by fold, C by C."""
    from medprobe.trainer.metrics import point_metrics

    t0 = time.perf_counter()
    splits, _ = cv_splits(stratify_key(ytr, "multiclass"), groups, 5, 0)
    names = [str(i) for i in range(5)]
    scores, losses = [], []
    for C in DEFAULT_C_GRID:
        s, ll = [], []
        for tr, va in splits:
            scaler = StandardScaler().fit(Xtr[tr])
            clf = LogisticRegression(C=C, max_iter=10000).fit(scaler.transform(Xtr[tr]), ytr[tr])
            p = clf.predict_proba(scaler.transform(Xtr[va]))
            s.append(point_metrics(ytr[va], p, "multiclass", names).values["macro_f1"])
            ll.append(float(-np.mean(np.log(np.clip(p[np.arange(len(va)), ytr[va]], 1e-15, 1)))))
        scores.append(s)
        losses.append(ll)
    best, _ = pick_C(DEFAULT_C_GRID, scores, losses, "macro_f1")
    C = DEFAULT_C_GRID[best]
    scaler = StandardScaler().fit(Xtr)
    clf = LogisticRegression(C=C, max_iter=10000).fit(scaler.transform(Xtr), ytr)
    proba = clf.predict_proba(scaler.transform(Xte))
    auc = roc_auc_score(yte, proba, multi_class="ovr", average="macro")
    return {"seconds": time.perf_counter() - t0, "C": C, "auc": auc, "probes": 5 * len(DEFAULT_C_GRID) + 1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", help="a store with the shared knee set's EfficientNet-Lite0 features")
    ap.add_argument("--dataset", default="knee")
    ap.add_argument("--layer", type=int, default=16)
    ap.add_argument("--rows", type=int, default=5778, help="synthetic training rows (OAI knee: 5,778)")
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--no-sklearn", action="store_true", help="skip the scikit-learn reference (slow)")
    ap.add_argument("--no-synthetic", action="store_true", help="only the store's knee features")
    args = ap.parse_args()
    problems = {}
    if args.store:
        problems[f"knee EfficientNet-Lite0 layer {args.layer}"] = from_store(args.store, args.dataset, args.layer)
    if not args.no_synthetic:
        problems[f"synthetic {args.rows:,} x {args.dim:,}, 5 classes"] = synthetic(args.rows, 1500, args.dim)
    # warm up torch's kernels and the allocator outside the timings (the first solve of a process is slower)
    Xw, yw, gw, _, _ = synthetic(300, 10, 64, seed=9)
    medprobe_run(Xw, yw, gw, Xw, yw, "full")
    table = Table(title="one probe: grouped 5-fold CV over 8 C by macro-F1, refit, test (2-core CPU unless a GPU)")
    for col in ("data", "method", "probes fitted", "wall s", "speed-up vs full", "C", "test macro AUC", "|AUC - full|"):
        table.add_column(col, justify="left" if col in ("data", "method") else "right")
    for name, (Xtr, ytr, groups, Xte, yte) in problems.items():
        full = medprobe_run(Xtr, ytr, groups, Xte, yte, "full")
        adaptive = medprobe_run(Xtr, ytr, groups, Xte, yte, "adaptive")
        rows = [("medprobe, full grid (default)", full), ("medprobe, adaptive grid", adaptive)]
        if not args.no_sklearn:
            rows.append(("scikit-learn lbfgs, full grid", sklearn_run(Xtr, ytr, groups, Xte, yte)))
        for method, r in rows:
            table.add_row(
                name, method, str(r["probes"]), f"{r['seconds']:.1f}", f"{full['seconds'] / r['seconds']:.1f}x",
                f"{r['C']:g}", f"{r['auc']:.4f}", f"{abs(r['auc'] - full['auc']):.4f}",
            )  # fmt: skip
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
