"""Probe-fitting benchmark: the study's Adam recipe vs scikit-learn lbfgs vs medprobe's batched torch solver.

Synthetic features with signal (rows x dim per layer, binary labels from a few latent directions), 80/20
train/test split. Each method fits probes on the same standardised training rows and is scored by test AUC:

* study: one ``nn.Linear`` per layer, BCE-with-logits, Adam lr 1e-4, batch 512, 80 epochs, no regularisation;
* sklearn: ``LogisticRegression(lbfgs)`` per (layer, C), default tol 1e-4 (``--sklearn-tol``; with large C its
  early stop moves the test AUC by up to ~0.01 where rows < features, so compare AUC against a tight tol);
* medprobe: every layer x C probe in one batched L-BFGS solve (``--device cuda`` on a GPU).

Timings are medians of ``--repeats`` runs, as wall seconds and as process CPU seconds (all threads; less
sensitive to other load on a shared machine) per probe.

Usage: ``python benchmarks/bench_trainer.py --rows 20000 --dim 4096 --layers 32 --cs 8 --device cuda``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from medprobe.trainer.solvers import ProbeBatch
from medprobe.trainer.solvers.torch_lbfgs import TorchSolver


def make_layers(rows: int, dim: int, layers: int, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """Per-layer float32 features sharing one latent signal whose strength varies with depth."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(rows, 8)).astype(np.float32)
    y = (latent[:, :3].sum(1) + rng.logistic(size=rows) > 0).astype(int)
    out = []
    for g in range(layers):
        mix = rng.normal(size=(8, dim)).astype(np.float32) * (0.3 + 0.7 * (g + 1) / layers) / np.sqrt(8)
        X = latent @ mix + rng.normal(size=(rows, dim)).astype(np.float32)
        out.append(X * rng.uniform(0.5, 2, dim).astype(np.float32) + rng.normal(size=dim).astype(np.float32))
    return out, y


def standardise(X: np.ndarray, train: np.ndarray) -> np.ndarray:
    mean, std = X[train].mean(0), X[train].std(0)
    return (X - mean) / np.where(std > 0, std, 1)


def study_recipe(Z: np.ndarray, y: np.ndarray, train, test, device: str, epochs: int) -> tuple[float, float]:
    """The reference study's probe: Adam lr 1e-4, batch 512, ``epochs`` epochs; returns (seconds, test AUC)."""
    torch.manual_seed(0)
    Xt = torch.as_tensor(Z[train], device=device)
    yt = torch.as_tensor(y[train], dtype=torch.float32, device=device)
    model = torch.nn.Linear(Z.shape[1], 1).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    t = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(len(yt), device=device)
        for i in range(0, len(yt), 512):
            idx = perm[i : i + 512]
            opt.zero_grad()
            loss_fn(model(Xt[idx]).squeeze(1), yt[idx]).backward()
            opt.step()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t
    with torch.no_grad():
        s = model(torch.as_tensor(Z[test], device=device)).squeeze(1).cpu().numpy()
    return seconds, float(roc_auc_score(y[test], s))


def timed(fn, repeats: int, device: str):
    """Run ``fn`` ``repeats`` times; returns (median wall s, median process CPU s, last result).

    CPU time (all threads of this process) is less sensitive than wall time to other load on a shared machine.
    """
    walls, cpus, out = [], [], None
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        if device == "cuda":
            torch.cuda.synchronize()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return float(np.median(walls)), float(np.median(cpus)), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--dim", type=int, default=4096)
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--cs", type=int, default=8, help="C values on a log grid 1e-4..1e3")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--epochs", type=int, default=80, help="epochs of the study's Adam recipe")
    ap.add_argument("--study-probes", type=int, default=1, help="layers fitted with the study recipe")
    ap.add_argument("--sklearn-probes", type=int, default=None, help="(layer, C) probes fitted with sklearn")
    ap.add_argument("--sklearn-tol", type=float, default=1e-4, help="sklearn's tol (its default 1e-4 stops early)")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats of each method (median reported)")
    ap.add_argument("--sklearn-repeats", type=int, default=None, help="timed repeats of sklearn [--repeats]")
    ap.add_argument("--json", help="also write the medprobe and sklearn rows to this JSON file (gpu_check.sh)")
    args = ap.parse_args()
    console = Console(width=160)
    console.print(f"device {args.device}, torch threads {torch.get_num_threads()}; building data ...")
    layers, y = make_layers(args.rows, args.dim, args.layers)
    rng = np.random.default_rng(1)
    perm = rng.permutation(args.rows)
    train, test = np.sort(perm[: int(0.8 * args.rows)]), np.sort(perm[int(0.8 * args.rows) :])
    Cs = np.logspace(-4, 3, args.cs)
    Zs = [standardise(X, train).astype(np.float32) for X in layers]

    # medprobe: every layer x C in one batched solve
    solver = TorchSolver(device=args.device)
    batch = ProbeBatch([train], np.zeros(args.cs, dtype=int), np.tile(Cs, (args.layers, 1)))
    if args.device == "cuda":  # warm up kernels and the allocator outside the timing
        solver.fit_many([Zs[0][:1000]], y[:1000], "binary", 2, ProbeBatch.single(1.0, np.arange(1000)))
        torch.cuda.synchronize()
    t_ours, c_ours, ours = timed(lambda: solver.fit_many(layers, y, "binary", 2, batch), args.repeats, args.device)
    n_ours = args.layers * args.cs
    auc_ours = {
        (g, c): roc_auc_score(y[test], ours[g][c].predict_proba(layers[g][test])[:, 1])
        for g in range(args.layers)
        for c in range(args.cs)
    }
    not_conv = sum(not p.converged for row in ours for p in row)

    # scikit-learn lbfgs, probe by probe on the same standardised rows
    n_sk = args.sklearn_probes or n_ours
    pairs = [(g, c) for g in range(args.layers) for c in range(args.cs)][:n_sk]

    def fit_sklearn():
        return {
            (g, c): LogisticRegression(C=Cs[c], solver="lbfgs", tol=args.sklearn_tol, max_iter=10000).fit(
                Zs[g][train], y[train]
            )
            for g, c in pairs
        }

    t_sk, c_sk, clfs = timed(fit_sklearn, args.sklearn_repeats or args.repeats, "cpu")
    auc_sk = {k: roc_auc_score(y[test], clf.predict_proba(Zs[k[0]][test])[:, 1]) for k, clf in clfs.items()}

    # the study's recipe, one probe per layer
    def fit_study():
        return [study_recipe(Zs[g], y, train, test, args.device, args.epochs) for g in range(args.study_probes)]

    t_study, c_study, study = timed(fit_study, args.repeats, args.device)

    per_sk, cpu_sk = t_sk / len(pairs), c_sk / len(pairs)
    per_study, cpu_study = t_study / len(study), c_study / len(study)
    per_ours, cpu_ours = t_ours / n_ours, c_ours / n_ours
    delta = max(abs(auc_ours[k] - auc_sk[k]) for k in auc_sk)
    mid = args.cs // 2
    title = (
        f"{args.layers} layers x {args.cs} C, {args.rows:,} x {args.dim:,} features, {args.device}, "
        f"{torch.get_num_threads()} threads, median of {args.repeats} runs "
        f"(sklearn {args.sklearn_repeats or args.repeats})"
    )
    table = Table(title=title)
    for col in (
        "method",
        "probes",
        "wall s",
        "wall s / probe",
        "CPU s / probe",
        "vs sklearn (wall)",
        "vs sklearn (CPU)",
        f"test AUC (layer 0, C={Cs[mid]:g})",
        "max |AUC - sklearn|",
        "best-C test AUC (oracle)",
    ):
        table.add_column(col, justify="right")
    study_delta = [abs(a - auc_sk[(g, mid)]) for g, (_, a) in enumerate(study) if (g, mid) in auc_sk]
    table.add_row(
        f"study: Adam 1e-4, bs 512, {args.epochs} ep",
        str(len(study)),
        f"{t_study:.2f}",
        f"{per_study:.3f}",
        f"{cpu_study:.3f}",
        f"{per_sk / per_study:.2f}x",
        f"{cpu_sk / cpu_study:.2f}x",
        f"{study[0][1]:.4f} (no C)",
        f"{max(study_delta):.4f}" if study_delta else "-",
        "-",
    )
    table.add_row(
        f"sklearn lbfgs (tol {args.sklearn_tol:g})",
        str(len(pairs)),
        f"{t_sk:.2f}",
        f"{per_sk:.3f}",
        f"{cpu_sk:.3f}",
        "1.00x",
        "1.00x",
        f"{auc_sk.get((0, mid), float('nan')):.4f}",
        "0",
        f"{max(v for (g, _), v in auc_sk.items() if g == 0):.4f}",
    )
    table.add_row(
        "medprobe torch batched",
        str(n_ours),
        f"{t_ours:.2f}",
        f"{per_ours:.4f}",
        f"{cpu_ours:.4f}",
        f"{per_sk / per_ours:.2f}x",
        f"{cpu_sk / cpu_ours:.2f}x",
        f"{auc_ours[(0, mid)]:.4f}",
        f"{delta:.5f}",
        f"{max(v for (g, _), v in auc_ours.items() if g == 0):.4f}",
    )
    console.print(table)
    if args.json:
        summary = {
            "bench": "trainer",
            "device": (
                torch.cuda.get_device_name() if args.device == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
            ),
            "shape": f"{args.layers} layers x {args.cs} C, {args.rows} x {args.dim}",
            "medprobe_probes": n_ours,
            "medprobe_wall_s": t_ours,
            "sklearn_probes": len(pairs),
            "sklearn_wall_s_per_probe": per_sk,
            "speedup_per_probe": per_sk / per_ours,
            "max_auc_diff_vs_sklearn": delta,
            "not_converged": not_conv,
        }
        Path(args.json).write_text(json.dumps(summary, indent=1))
    console.print(
        f"medprobe: {not_conv} of {n_ours} probes not converged; study row's last column: its AUC vs "
        f"sklearn's at C={Cs[mid]:g}"
    )


if __name__ == "__main__":
    main()
