"""``medprobe vqa report``: PNGs (accuracy per category, letter distribution, reliability) and summary.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from medprobe.errors import NotFoundError
from medprobe.vqa.metrics import option_probabilities, vqa_metrics
from medprobe.vqa.prompting import Item

if TYPE_CHECKING:
    from medprobe.featurestore import FeatureStore


def load_run(store: FeatureStore, run_id: str) -> tuple[list[dict], dict[str, Item], dict]:
    """A run's predictions, its items by id, and its recorded parameters."""
    rows = store.sql("SELECT * FROM vqa_predictions WHERE run_id = ? ORDER BY item_id, rotation", [run_id]).to_pylist()
    if not rows:
        recent = store.sql("SELECT DISTINCT run_id FROM vqa_predictions ORDER BY 1 LIMIT 10").column(0).to_pylist()
        raise NotFoundError(f"no VQA predictions for run {run_id!r}; runs: {', '.join(recent) or 'none'}")
    item_set = rows[0]["item_set"]
    items = {
        r["item_id"]: Item.from_row(r)
        for r in store.sql("SELECT * FROM vqa_items WHERE item_set = ?", [item_set]).to_pylist()
    }
    params = store.sql("SELECT params FROM runs WHERE run_id = ?", [run_id]).column(0).to_pylist()
    return rows, items, json.loads(params[0]) if params else {}


def _cell(e: dict | None) -> str:
    if not e or e.get("value") is None:
        return "-"
    return f"{e['value']:.3f} [{e['ci_low']:.3f}, {e['ci_high']:.3f}]"


def _plot_categories(runs: list[tuple[str, dict, dict]], out: Path, column: str | None = None, *,
                     open_recall: bool = False) -> Path:  # fmt: skip
    """Accuracy bars with CIs per category (``column``: a category column of ``by``; None: the items' category);
    ``open_recall``: the open-ended items' token recall per value of ``column`` instead."""
    def per(m: dict) -> dict:
        if open_recall:
            values = m.get("by", {}).get(column, {})
            return {v: e["open"]["token_recall"] for v, e in values.items() if "token_recall" in e.get("open", {})}
        return m["per_category"] if column is None else m.get("by", {}).get(column, {})

    cats = sorted({c for _, m, _ in runs for c in per(m)})
    fig, ax = plt.subplots(figsize=(min(14.0, max(6.0, 0.35 * len(cats) * len(runs) + 2)), 4.8))
    width = 0.8 / len(runs)

    def values(m: dict, key: str) -> np.ndarray:
        got = [(per(m).get(c) or {}).get(key) for c in cats]
        return np.array([np.nan if v is None else v for v in got], dtype=float)  # 0.0 stays 0.0

    for k, (run_id, m, p) in enumerate(runs):
        v, lo, hi = values(m, "value"), values(m, "ci_low"), values(m, "ci_high")
        x = np.arange(len(cats)) + (k - (len(runs) - 1) / 2) * width
        ax.bar(x, v, width, yerr=np.vstack([v - lo, hi - v]), capsize=3,
               label=f"{p.get('model_id', '?')} · {p.get('mode', '?')} ({run_id[-6:]})")  # fmt: skip
    if runs and runs[0][1].get("chance") is not None and not open_recall:
        ax.axhline(runs[0][1]["chance"], ls="--", color="grey", lw=1, label="chance")
    ax.set_xticks(np.arange(len(cats)))
    n_items = [max((per(m).get(c) or {}).get("n", 0) for _, m, _ in runs) for c in cats]
    ax.set_xticklabels([f"{c} ({n})" for c, n in zip(cats, n_items, strict=True)], rotation=35, ha="right",
                       fontsize=8)  # fmt: skip
    ax.set_ylim(0, 1.05)
    what = "open-ended token recall" if open_recall else "accuracy"
    ax.set_ylabel(f"{what} (95% CI, clustered by group)")
    ax.set_title("Accuracy per category" if column is None else f"{what.capitalize()} per {column}")
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    stem = "vqa_open_recall_by" if open_recall else "vqa_by"
    path = out / ("vqa_categories.png" if column is None else f"{stem}_{_safe(column)}.png")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _safe(name: str) -> str:
    """A category column as part of a file name."""
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)


def _plot_letters(runs: list[tuple[str, dict, dict]], out: Path) -> Path:
    fig, axes = plt.subplots(1, len(runs), figsize=(4.5 * len(runs), 3.8), squeeze=False)
    for ax, (_, m, p) in zip(axes[0], runs, strict=True):
        letters = sorted(set(m["letters"]["predicted"]) | set(m["letters"]["gold"]), key=lambda s: (len(s), s))
        x = np.arange(len(letters))
        ax.bar(x - 0.2, [m["letters"]["gold"].get(s, 0) for s in letters], 0.4, label="gold")
        ax.bar(x + 0.2, [m["letters"]["predicted"].get(s, 0) for s in letters], 0.4, label="predicted")
        ax.set_xticks(x)
        ax.set_xticklabels(letters)
        ax.set_title(f"{p.get('model_id', '?')} · {p.get('mode', '?')}", fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle("Shown letters: gold against predicted (position bias)", fontsize=10)
    fig.tight_layout()
    path = out / "vqa_letters.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _plot_reliability(prob_runs: list[tuple[str, list[dict], dict, dict]], out: Path) -> Path | None:
    if not prob_runs:
        return None
    fig, ax = plt.subplots(figsize=(5, 5))
    edges = np.linspace(0, 1, 11)
    for run_id, rows, items, p in prob_runs:
        conf, right = [], []
        for r in rows:
            probs = option_probabilities(r)
            if r["rotation"] != 0 or probs is None:
                continue
            conf.append(probs.max())
            right.append(int(np.argmax(probs)) == r["option_order"].index(items[r["item_id"]].answer))
        c, y = np.array(conf), np.array(right, dtype=float)
        which = np.clip(np.digitize(c, edges[1:-1]), 0, 9)
        xs = [c[which == b].mean() for b in range(10) if (which == b).any()]
        ys = [y[which == b].mean() for b in range(10) if (which == b).any()]
        ax.plot(xs, ys, marker="o", label=f"{p.get('model_id', '?')} · {p.get('mode', '?')} ({run_id[-6:]})")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
    ax.set_xlabel("confidence of the chosen option")
    ax.set_ylabel("accuracy")
    ax.set_title("Reliability (10 confidence bins)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = out / "vqa_reliability.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_vqa_report(store: FeatureStore, run_ids: list[str], out_dir: str, *, n_boot: int = 1000) -> list[Path]:
    """PNGs and summary.md for ``run_ids``; returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs, prob_runs = [], []
    for run_id in run_ids:
        rows, items, params = load_run(store, run_id)
        metrics = vqa_metrics(rows, items, n_boot=n_boot, seed=int(params.get("boot_seed") or 0))
        runs.append((run_id, metrics, params))
        if "calibration" in metrics:
            prob_runs.append((run_id, rows, items, params))
    images = [_plot_categories(runs, out), _plot_letters(runs, out)]
    columns = sorted({c for _, m, _ in runs for c in m["by"]})
    images += [_plot_categories(runs, out, column) for column in columns]
    if any("token_recall" in m.get("open", {}) for _, m, _ in runs):
        images += [_plot_categories(runs, out, column, open_recall=True) for column in columns]
    rel = _plot_reliability(prob_runs, out)
    if rel is not None:
        images.append(rel)
    lines = ["# medprobe VQA report", "",
             "Accuracy on the source option order with 95% bootstrap CIs that resample groups (patients or images).",
             "", "| run | model | mode | shots | items | accuracy | circular | chance | majority | parse failures "
             "| Brier | ECE |", "|" + "---|" * 12]  # fmt: skip
    for run_id, m, p in runs:
        cal = m.get("calibration") or {}
        maj = m.get("majority") or {}
        lines.append(
            f"| {run_id} | {p.get('model_id', '?')} | {p.get('mode', '?')} | {p.get('shots', 0)} | {m['n_items']} "
            f"| {_cell(m['accuracy'])} | {_cell(m.get('circular_accuracy'))} | {_number(m['chance'])} "
            f"| {maj.get('accuracy', float('nan')):.3f} ({maj.get('letter', '-')}) | {m['parse_failure_rate']:.1%} "
            f"| {cal.get('brier', float('nan')):.3f} | {cal.get('ece', float('nan')):.3f} |"
        )
    opened = [(run_id, m["open"], p) for run_id, m, p in runs if "open" in m]
    if opened:
        lines += ["", "## Open-ended items", "",
                  "Means over items with 95% CIs resampling groups; accuracy above counts an exact match as right.", "",
                  "| run | items | exact match | token F1 | token recall | yes/no accuracy | log-lik per token | "
                  "perplexity |", "|" + "---|" * 8]  # fmt: skip
        for run_id, o, _ in opened:
            lines.append(f"| {run_id} | {o['n_items']} | {_cell(o.get('exact_match'))} | {_cell(o.get('token_f1'))} "
                         f"| {_cell(o.get('token_recall'))} | {_cell(o.get('yes_no_accuracy'))} "
                         f"| {_cell(o.get('loglik_per_token'))} | {_number(o.get('perplexity'))} |")  # fmt: skip
    lines += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in images]
    summary = out / "summary.md"
    summary.write_text("\n".join(lines) + "\n")
    return [*images, summary]

