"""The clinical figures of ``medprobe report``: operating points on the ROC curve, reliability diagrams and subgroup
forest plots, drawn from what a run stored (``probe_results.metrics`` and ``predictions``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from medprobe.trainer.calibration import ECE_BINS, confidence_and_outcome, equal_mass_bins
from medprobe.trainer.clinical_tables import ci_cell

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from medprobe.featurestore import FeatureStore

_MARKERS = ("o", "s", "^", "D", "v", "P")


def save_png(fig: Any, path: Path) -> Path:
    """Lay out, write (120 dpi) and close a figure; returns its path."""
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def mark_operating_points(ax: Axes, metrics: dict[str, Any], class_name: str, color: Any) -> None:
    """The test (1 - specificity, sensitivity) of each operating point of ``class_name`` on its ROC curve."""
    for i, point in enumerate((metrics.get("operating_points") or {}).get(class_name, [])):
        sens, spec = (point.get("sensitivity") or {}).get("value"), (point.get("specificity") or {}).get("value")
        if sens is None or spec is None:
            continue
        ax.plot(1 - spec, sens, _MARKERS[i % len(_MARKERS)], color=color, ms=7, mec="black", mew=0.6,
                label=f"{class_name} {point['rule']} (t={point['threshold']:.2f})")  # fmt: skip


def _predictions(store: FeatureStore, probe_id: str) -> tuple[np.ndarray, np.ndarray] | None:
    rows = store.sql("SELECT y_true, probabilities FROM predictions WHERE probe_id = ? ORDER BY image_hash",
                     [probe_id]).to_pylist()  # fmt: skip
    rows = [r for r in rows if json.loads(r["y_true"]) is not None]
    if not rows:
        return None
    return np.array([json.loads(r["y_true"]) for r in rows]), np.array([r["probabilities"] for r in rows])


def plot_reliability(store: FeatureStore, best: dict[str, Any], title: str, out: Path, stem: str) -> Path | None:
    """Reliability diagram of one probe's test predictions: observed frequency against mean confidence in the
    equal-mass bins the ECE uses, with the Brier score and ECE (and their CIs) in the title."""
    got = _predictions(store, best["probe_id"])
    if got is None:
        return None
    y, proba = got
    kind = "multilabel" if y.ndim == 2 else ("binary" if proba.shape[1] == 2 else "multiclass")
    conf, outcome = confidence_and_outcome(y, proba, kind)  # type: ignore[arg-type]
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect calibration")
    names = best["class_names"] if kind == "multilabel" else ["positive class" if kind == "binary" else "top label"]
    for m in range(conf.shape[1]):
        bins = equal_mass_bins(conf[:, m], ECE_BINS)
        x = [conf[bins == b, m].mean() for b in np.unique(bins)]
        f = [outcome[bins == b, m].mean() for b in np.unique(bins)]
        ax.plot(x, f, "o-", ms=4, label=names[m])
    metrics = best["m"]
    ax.set_xlabel("mean predicted probability (equal-mass bins)")
    ax.set_ylabel("observed frequency")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(f"{title}\nBrier {ci_cell(metrics.get('brier'))}, ECE ({metrics.get('ece_bins', ECE_BINS)} bins) "
                 f"{ci_cell(metrics.get('ece'))}", fontsize=9)  # fmt: skip
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    return save_png(fig, out / f"reliability_{stem}.png")


def plot_subgroups(best: dict[str, Any], title: str, out: Path, stem: str) -> Path | None:
    """Forest plot of the macro AUC per subgroup (one block per metadata column), flagged groups listed."""
    blocks = best["m"].get("subgroups") or []
    if not blocks:
        return None
    labels, values, lows, highs = [], [], [], []
    for block in blocks:
        for g in block["groups"]:
            entry = g.get("macro_auc") or {}
            labels.append(f"{block['column']} = {g['group']} (n={g['n']})" + (" flagged" if "flagged" in g else ""))
            values.append(np.nan if entry.get("value") is None else entry["value"])
            lows.append(np.nan if entry.get("ci_low") is None else entry["ci_low"])
            highs.append(np.nan if entry.get("ci_high") is None else entry["ci_high"])
    pos = np.arange(len(labels))[::-1]
    v, lo, hi = np.array(values), np.array(lows), np.array(highs)
    fig, ax = plt.subplots(figsize=(6.5, 0.45 * len(labels) + 1.5))
    ax.errorbar(v, pos, xerr=[v - lo, hi - v], fmt="s", color="black", ecolor="grey", capsize=3)
    overall = (best["m"].get("macro_auc") or {}).get("value")
    if overall is not None:
        ax.axvline(overall, color="tab:blue", ls="--", lw=1, label=f"all test rows {overall:.3f}")
        ax.legend(fontsize=7, loc="lower right")
    ax.set_yticks(pos, labels, fontsize=8)
    ax.set_xlabel("macro AUC (95% bootstrap CI)")
    gaps = [f"{b['column']}: gap {ci_cell(b['largest_gap'])}" for b in blocks if b.get("largest_gap")]
    ax.set_title(f"{title}\n" + "; ".join(gaps), fontsize=9)
    ax.grid(alpha=0.3, axis="x")
    return save_png(fig, out / f"subgroups_{stem}.png")
