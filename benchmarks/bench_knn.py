"""The kNN baseline and image search, side by side with their references in one run.

1. kNN class probabilities: medprobe's chunked ``knn_proba`` (cosine, exp(sim/0.07) votes) against scikit-learn's
   ``KNeighborsClassifier(metric="cosine", algorithm="brute")`` with the same weights: wall time, medprobe's peak RSS
   growth (its float64 copy of the training rows plus one similarity block of at most 256 MB), and the largest
   difference between the two probability matrices.
2. Search: the FAISS exact index (``IndexFlatIP`` on normalised rows) against a NumPy brute-force top-k: build and
   query time, and whether the top-k ids agree.

Synthetic float32 features (``--train`` rows x ``--dim``), 5 classes. On a GPU machine pass ``--device cuda``.

    python benchmarks/bench_knn.py                       # 20,000 x 1,024, 2,000 queries
    python benchmarks/bench_knn.py --train 100000 --dim 4096 --queries 1000 --skip-sklearn
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np
from rich.console import Console
from rich.table import Table


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=20_000)
    parser.add_argument("--queries", type=int, default=2_000)
    parser.add_argument("--dim", type=int, default=1_024)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-sklearn", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the results as JSON (for gpu_table.py)")
    args = parser.parse_args()

    from medprobe.featurestore.index import _new_index, normalised
    from medprobe.trainer.knn import DINOV2_TEMPERATURE, knn_proba

    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, args.train)
    centers = rng.normal(size=(5, args.dim)).astype(np.float32)
    X = (rng.normal(size=(args.train, args.dim)).astype(np.float32) + 0.4 * centers[y]).astype(np.float32)
    Q = (rng.normal(size=(args.queries, args.dim)).astype(np.float32) + 0.4 * centers[rng.integers(0, 5, args.queries)])
    targets = np.eye(5)[y]
    rows = []

    rss0 = _rss_mb()
    t = time.perf_counter()
    ours = knn_proba(X, targets, Q, args.k, device=args.device)
    ours_s = time.perf_counter() - t
    ours_rss = _rss_mb() - rss0
    row = {"what": "kNN probabilities", "medprobe_s": ours_s, "medprobe_rss_growth_mb": ours_rss}
    if not args.skip_sklearn:
        from sklearn.neighbors import KNeighborsClassifier

        clf = KNeighborsClassifier(n_neighbors=args.k, metric="cosine", algorithm="brute",
                                   weights=lambda d: np.exp((1.0 - d) / DINOV2_TEMPERATURE))  # fmt: skip
        rss1 = _rss_mb()
        t = time.perf_counter()
        ref = clf.fit(X, y).predict_proba(Q)
        row.update({"reference_s": time.perf_counter() - t, "reference_rss_growth_mb": _rss_mb() - rss1,
                    "max_abs_diff": float(np.abs(ours - ref).max())})  # fmt: skip
    rows.append(row)

    t = time.perf_counter()
    index = _new_index("exact", args.dim)
    index.add(normalised(X))
    build_s = time.perf_counter() - t
    t = time.perf_counter()
    _, ids = index.search(normalised(Q), args.k)
    faiss_s = time.perf_counter() - t
    t = time.perf_counter()
    Xn, Qn = normalised(X), normalised(Q)
    brute = np.argsort(-(Qn @ Xn.T), axis=1, kind="stable")[:, : args.k]
    brute_s = time.perf_counter() - t
    agree = float(np.mean([set(a) == set(b) for a, b in zip(ids, brute, strict=True)]))
    rows.append({"what": "search top-k", "medprobe_s": faiss_s, "build_s": build_s, "reference_s": brute_s,
                 "same_topk_share": agree})  # fmt: skip

    if args.json:
        print(json.dumps({"train": args.train, "dim": args.dim, "queries": args.queries, "k": args.k, "rows": rows}))
        return
    table = Table(title=f"kNN and search: {args.train:,} x {args.dim:,} train, {args.queries:,} queries, k={args.k}, "
                  f"{args.device}")  # fmt: skip
    for col in ("what", "medprobe s", "reference s", "ratio", "check"):
        table.add_column(col)
    for r in rows:
        ref = r.get("reference_s")
        ratio = f"{ref / r['medprobe_s']:.1f}x" if ref else "-"
        if "max_abs_diff" in r:
            check = f"max |diff| {r['max_abs_diff']:.1e}; medprobe peak RSS +{r['medprobe_rss_growth_mb']:.0f} MB"
        elif "same_topk_share" in r:
            check = f"same top-k {r['same_topk_share']:.1%}; index build {r['build_s']:.2f} s"
        else:
            check = f"RSS +{r['medprobe_rss_growth_mb']:.0f} MB"
        table.add_row(r["what"], f"{r['medprobe_s']:.2f}", "-" if ref is None else f"{ref:.2f}", ratio, check)
    Console().print(table)
    print("reference: scikit-learn KNeighborsClassifier (cosine, brute, same weights); NumPy argsort for search")


if __name__ == "__main__":
    main()
