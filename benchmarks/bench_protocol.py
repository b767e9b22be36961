"""One probe's C selection + refit + test, as `medprobe train` runs it: the adaptive grid against the full grid and
against scikit-learn, side by side in one run.

Data: the shared knee radiographs' EfficientNet-Lite0 features (layer 16, 1,280-d, KL grade, 5 classes) when a
store holding them is given (``--store``, after `medprobe extract -d knee -m efficientnet-lite0`), and a synthetic
problem of the OAI knee benchmark's shape (5,778 training rows x 1,280 features, 5 classes, patient groups)
built in code. Each method: grouped 5-fold CV over the 8-decade C grid by macro-F1, refit at the chosen C, test AUC.

    python benchmarks/bench_protocol.py                       # synthetic OAI-shaped problem
    python benchmarks/bench_protocol.py --store ./medprobe-store --dataset knee
    python benchmarks/bench_protocol.py --no-synthetic --big --select-by macro_auc   # 20,000 x 4,096
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from medprobe.trainer.defaults import DEFAULT_C_GRID
from medprobe.trainer.protocol import ProtocolTiming, cv_splits, fit_protocol, pick_C, stratify_key
from medprobe.trainer.solvers import get_solver


def synthetic(n_train: int, n_test: int, dim: int, seed: int = 0, n_classes: int = 5) -> tuple:
    """CNN-like features: non-negative, strongly correlated (64 latent factors), the 5 ordered classes (KL grades'
    frequencies) shifting a few factors; 2 rows per patient group. Correlated features make large C ill-conditioned,
    as real CNN features are. ``n_classes=2``: grades 2-4 against 0-1 (radiographic osteoarthritis)."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    y = rng.choice(5, size=n, p=[0.4, 0.18, 0.25, 0.13, 0.04])
    factors = rng.normal(size=(n, 64))
    factors[:, :4] += 0.35 * y[:, None] * np.array([1.0, -0.6, 0.4, 0.2])
    X = np.clip(factors @ rng.normal(size=(64, dim)) / 8 + 0.3 * rng.normal(size=(n, dim)) + 0.5, 0, 6)
    groups = np.arange(n) // 2
    if n_classes == 2:
        y = (y >= 2).astype(int)
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


def medprobe_run(Xtr, ytr, groups, Xte, yte, kind: str, names: list[str], metric: str, grid: str, warm: bool) -> dict:
    timing = ProtocolTiming()
    t0 = time.perf_counter()
    solver = get_solver("torch", precondition=warm)  # before: no warm starts and no preconditioner (the old solver)
    (result,) = fit_protocol(
        [Xtr], ytr, kind, names, solver, groups=groups, metric=metric, grid=grid, warm_start=warm, timing=timing
    )
    seconds = time.perf_counter() - t0
    proba = result.probe.predict_proba(Xte)
    evaluated = [float(c) for c in result.cv_scores]
    return {"seconds": seconds, "C": result.C, "auc": _auc(yte, proba), "probes": timing.n_probes, "grid": evaluated}


def _auc(y: np.ndarray, proba: np.ndarray) -> float:
    if proba.shape[1] == 2:
        return float(roc_auc_score(y, proba[:, 1]))
    return float(roc_auc_score(y, proba, multi_class="ovr", average="macro"))


def sklearn_run(Xtr, ytr, groups, Xte, yte, kind: str, names: list[str], metric: str, grid: list[float]) -> dict:
    """The same protocol with scikit-learn's lbfgs (its default tol, max_iter 10,000), fold by fold, C by C, over
    ``grid`` (the full grid, or the C values medprobe's adaptive grid fitted: the same fits)."""
    from medprobe.trainer.metrics import point_metrics

    t0 = time.perf_counter()
    splits, _ = cv_splits(stratify_key(ytr, kind), groups, 5, 0)
    scores, losses = [], []
    for C in grid:
        s, ll = [], []
        for tr, va in splits:
            scaler = StandardScaler().fit(Xtr[tr])
            clf = LogisticRegression(C=C, max_iter=10000).fit(scaler.transform(Xtr[tr]), ytr[tr])
            p = clf.predict_proba(scaler.transform(Xtr[va]))
            s.append(point_metrics(ytr[va], p, kind, names).values[metric] if metric != "log_loss" else 0.0)
            ll.append(float(-np.mean(np.log(np.clip(p[np.arange(len(va)), ytr[va]], 1e-15, 1)))))
        scores.append(s)
        losses.append(ll)
    best, _ = pick_C(grid, scores, losses, metric)
    C = grid[best]
    scaler = StandardScaler().fit(Xtr)
    clf = LogisticRegression(C=C, max_iter=10000).fit(scaler.transform(Xtr), ytr)
    proba = clf.predict_proba(scaler.transform(Xte))
    return {"seconds": time.perf_counter() - t0, "C": C, "auc": _auc(yte, proba), "probes": 5 * len(grid) + 1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", help="a store with the shared knee set's EfficientNet-Lite0 features")
    ap.add_argument("--dataset", default="knee")
    ap.add_argument("--layer", type=int, default=16)
    ap.add_argument("--rows", type=int, default=5778, help="OAI-shaped synthetic training rows (OAI knee: 5,778)")
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--big", action="store_true", help="also the synthetic 20,000 x 4,096 binary problem")
    ap.add_argument("--select-by", default="macro_f1", help="the metric that chooses C (knee's task: macro_f1)")
    ap.add_argument("--sklearn", choices=["same", "full", "none"], default="same",
                    help="scikit-learn over the C values the adaptive grid fitted (same), every C (full), or not")
    ap.add_argument("--no-synthetic", action="store_true", help="only the store's knee features")
    ap.add_argument("--json", help="also write the rows to this JSON file")
    args = ap.parse_args()
    names5 = [str(i) for i in range(5)]
    problems = {}
    if args.store:
        problems[f"knee EfficientNet-Lite0 layer {args.layer}"] = (*from_store(args.store, args.dataset, args.layer), 5)
    if not args.no_synthetic:
        problems[f"synthetic {args.rows:,} x {args.dim:,}, 5 classes"] = (*synthetic(args.rows, 1500, args.dim), 5)
    if args.big:
        problems["synthetic 20,000 x 4,096, binary"] = (*synthetic(16_000, 4_000, 4_096, seed=1, n_classes=2), 2)
    # warm up torch's kernels and the allocator outside the timings (the first solve of a process is slower)
    Xw, yw, gw, _, _ = synthetic(300, 10, 64, seed=9)
    medprobe_run(Xw, yw, gw, Xw, yw, "multiclass", names5, "macro_auc", "full", False)
    table = Table(title=f"one layer: grouped 5-fold CV over 8 C by {args.select_by}, refit, test (this machine)")
    for col in ("data", "method", "probes fitted", "wall s", "speed-up vs before", "C", "test AUC", "|AUC - before|"):
        table.add_column(col, justify="left" if col in ("data", "method") else "right")
    results = []
    for name, (Xtr, ytr, groups, Xte, yte, k) in problems.items():
        kind, names = ("binary", ["0", "1"]) if k == 2 else ("multiclass", names5)
        args_ = (Xtr, ytr, groups, Xte, yte, kind, names, args.select_by)
        before = medprobe_run(*args_, "full", False)
        default = medprobe_run(*args_, "adaptive", True)
        rows = [
            ("medprobe before: full grid, cold, no preconditioner", before),
            ("medprobe default: adaptive grid, warm starts", default),
            ("medprobe --grid full, warm starts", medprobe_run(*args_, "full", True)),
        ]
        if args.sklearn != "none":
            grid = list(DEFAULT_C_GRID) if args.sklearn == "full" else default["grid"]
            label = "full grid" if args.sklearn == "full" else f"the default's {len(grid)} C values"
            rows.append((f"scikit-learn lbfgs, {label}", sklearn_run(*args_, grid)))
        for method, r in rows:
            table.add_row(
                name, method, str(r["probes"]), f"{r['seconds']:.1f}", f"{before['seconds'] / r['seconds']:.1f}x",
                f"{r['C']:g}", f"{r['auc']:.4f}", f"{abs(r['auc'] - before['auc']):.4f}",
            )  # fmt: skip
            results.append({"data": name, "method": method, **{k: v for k, v in r.items() if k != "grid"}})
    Console(width=170).print(table)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
