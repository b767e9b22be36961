"""``medprobe report``: PNG plots and a Markdown summary of probe runs, read back from the store."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import roc_curve

from medprobe.errors import NotFoundError
from medprobe.trainer.clinical_plots import mark_operating_points, plot_reliability, plot_subgroups, save_png
from medprobe.trainer.clinical_tables import clinical_tables

if TYPE_CHECKING:
    from medprobe.featurestore import FeatureStore


def _load(store: FeatureStore, run_ids: list[str]) -> tuple[list[dict], list[dict], dict[str, str]]:
    results = store.sql(
        "SELECT * FROM probe_results WHERE list_contains(?, run_id) ORDER BY run_id, feature_set_id, layer",
        [run_ids],
    ).to_pylist()
    found = {r["run_id"] for r in results}
    missing = [r for r in run_ids if r not in found]
    if missing:
        recent = (
            store.sql("SELECT DISTINCT run_id FROM probe_results ORDER BY run_id DESC LIMIT 10")
            .column("run_id")
            .to_pylist()
        )
        raise NotFoundError(f"no probe results for run(s) {missing}; recent probe runs: {recent or 'none'}")
    comps = store.sql("SELECT * FROM probe_comparisons WHERE list_contains(?, run_id)", [run_ids]).to_pylist()
    names = {}
    for fs in {r["feature_set_id"] for r in results}:
        row = store.feature_set(fs)
        names[fs] = f"{row.model_id.split('/')[-1]} ({row.pooling})"
    params = {
        row["run_id"]: json.loads(row["params"] or "{}")
        for row in store.sql("SELECT run_id, params FROM runs WHERE list_contains(?, run_id)", [run_ids]).to_pylist()
    }
    for r in results:
        r["m"] = json.loads(r["metrics"])
        r["n_boot"] = r["m"].get("n_boot") or params.get(r["run_id"], {}).get("n_boot")
    return results, comps, names


def _external(results: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The rows fitted in the runs, and the rows that apply them to other datasets (external test sets)."""
    return [r for r in results if not r.get("applied_from")], [r for r in results if r.get("applied_from")]


def _val(entry: dict | None, key: str = "value") -> float:
    v = None if entry is None else entry.get(key)
    return np.nan if v is None else float(v)


def _best(rows: list[dict]) -> dict:
    full = [r for r in rows if r["train_fraction"] == 1.0] or rows
    scored = [r for r in full if r["m"].get("cv_mean") is not None]
    if not scored:
        return full[0]
    sign = -1.0 if scored[0]["m"].get("selected_by") == "log_loss" else 1.0
    return max(scored, key=lambda r: (sign * r["m"]["cv_mean"], -r["layer"]))


def _short(run_id: str) -> str:
    """``sweep-...-ca61c7af6397`` -> ``sweep ..6397``: enough to tell runs apart in a legend."""
    return f"{run_id.split('-')[0]} ..{run_id[-4:]}"


Group = tuple[str, str, str, str]  # run, feature set, task, method


def _groups(results: list[dict]) -> dict[Group, list[dict]]:
    out: dict[Group, list[dict]] = {}
    for r in results:
        out.setdefault((r["run_id"], r["feature_set_id"], r["task"], r.get("method") or "probe"), []).append(r)
    return out


def _label(names: dict[str, str], fs: str, method: str) -> str:
    """``model (pooling)``, with the method when it is not a probe."""
    return names[fs] if method == "probe" else f"{names[fs]} · {method}"


def chosen(r: dict) -> str:
    """What a result row chose: ``C=0.1``, ``k=20`` or ``-`` (zero-shot)."""
    if r.get("c") is not None:
        return f"C={r['c']:g}"
    return f"k={r['k']}" if r.get("k") is not None else "-"


def plot_layer_curves(results: list[dict[str, Any]], names: dict[str, str], out: Path) -> Path | None:
    """Macro AUC (and balanced accuracy) per layer with 95% bootstrap CI bands, one line per feature set and
    method; single-layer kNN and zero-shot results are drawn as dashed levels beside the curves."""
    groups = [
        (k, sorted([r for r in rows if r["train_fraction"] == 1.0], key=lambda r: r["layer"]))
        for k, rows in _groups(results).items()
    ]
    curves = [(k, rows) for k, rows in groups if len(rows) > 1]
    levels = [(k, rows[0]) for k, rows in groups if len(rows) == 1 and k[3] != "probe"]
    if not curves:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharex=True)
    for (run_id, fs, task, method), rows in curves:
        layers = [r["layer"] for r in rows]
        for ax, metric in zip(axes, ("macro_auc", "balanced_accuracy"), strict=True):
            v = [_val(r["m"][metric]) for r in rows]
            lo = [_val(r["m"][metric], "ci_low") for r in rows]
            hi = [_val(r["m"][metric], "ci_high") for r in rows]
            label = f"{_label(names, fs, method)} · {task} · {_short(run_id)}"
            (line,) = ax.plot(layers, v, marker="o", ms=3, label=label)
            ax.fill_between(layers, lo, hi, alpha=0.2, color=line.get_color())
            best = _best(rows)
            ax.scatter([best["layer"]], [_val(best["m"][metric])], s=80, facecolors="none", edgecolors="k", zorder=3)
    for (run_id, fs, task, method), r in levels:
        for ax, metric in zip(axes, ("macro_auc", "balanced_accuracy"), strict=True):
            label = f"{_label(names, fs, method)} (layer {r['layer']}) · {task} · {_short(run_id)}"
            ax.axhline(_val(r["m"][metric]), ls="--", lw=1.2, color="k" if method == "zeroshot" else "grey",
                       label=label)  # fmt: skip
    for ax, title in zip(axes, ("Macro AUC (one-vs-rest)", "Balanced accuracy"), strict=True):
        ax.set_xlabel("layer")
        ax.set_ylabel(title)
        ax.set_title(f"{title} by layer, test split (95% bootstrap CI)")
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].legend(fontsize=8, loc="lower right")
    fig.text(0.5, -0.02, "circle: layer chosen by cross-validation on training rows; dashed: single-layer baselines",
             ha="center", fontsize=8)  # fmt: skip
    fig.tight_layout()
    path = out / "layer_curve.png"
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_roc(store: FeatureStore, results: list[dict[str, Any]], names: dict[str, str], out: Path) -> list[Path]:
    """ROC curves per class of each run's best full-data probe."""
    paths = []
    for (run_id, fs, task, method), rows in _groups(results).items():
        best = _best(rows)
        pred = store.sql(
            "SELECT y_true, probabilities FROM predictions WHERE probe_id = ? ORDER BY image_hash", [best["probe_id"]]
        ).to_pylist()
        if not pred:
            continue
        P = np.array([p["probabilities"] for p in pred])
        Y = [json.loads(p["y_true"]) for p in pred]
        classes = best["class_names"]
        multilabel = isinstance(Y[0], list)
        T = np.array(Y) if multilabel else np.eye(len(classes), dtype=int)[np.array(Y)]
        fig, ax = plt.subplots(figsize=(5.5, 5))
        shown = range(1, 2) if (len(classes) == 2 and not multilabel) else range(len(classes))
        for k in shown:
            if T[:, k].min() == T[:, k].max():
                continue
            fpr, tpr, _ = roc_curve(T[:, k], P[:, k])
            auc = best["m"]["auc_per_class"][classes[k]]
            (line,) = ax.plot(
                fpr,
                tpr,
                label=f"{classes[k]}: AUC {_val(auc):.3f} [{_val(auc, 'ci_low'):.3f}, {_val(auc, 'ci_high'):.3f}]",
            )
            mark_operating_points(ax, best["m"], classes[k], line.get_color())
        ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance")
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_title(
            f"ROC, {task}: {_label(names, fs, method)}, layer {best['layer']}\n(one-vs-rest, n_test={best['n_test']}; "
            "markers: operating points)",
            fontsize=9,
        )
        ax.legend(fontsize=7, loc="lower right")
        ax.grid(alpha=0.3)
        paths.append(save_png(fig, out / f"roc_{run_id}_{fs[:12]}{'' if method == 'probe' else '_' + method}.png"))
    return paths


def plot_label_efficiency(results: list[dict[str, Any]], names: dict[str, str], out: Path) -> Path | None:
    """Macro AUC against the fraction of training labels: seeds as points, their mean as a line."""
    groups = {k: rows for k, rows in _groups(results).items() if len({r["train_fraction"] for r in rows}) > 1}
    if not groups:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (run_id, fs, task, method), rows in groups.items():
        layer = _best(rows)["layer"]
        rows = [r for r in rows if r["layer"] == layer]
        fracs = sorted({r["train_fraction"] for r in rows})
        mean, lo, hi = [], [], []
        for f in fracs:
            vals = np.array([_val(r["m"]["macro_auc"]) for r in rows if r["train_fraction"] == f])
            mean.append(np.nanmean(vals))
            lo.append(np.nanmin(vals))
            hi.append(np.nanmax(vals))
        label = f"{_label(names, fs, method)} · {task} (layer {layer}) · {_short(run_id)}"
        (line,) = ax.plot(fracs, mean, marker="o", label=label)
        ax.fill_between(fracs, lo, hi, alpha=0.2, color=line.get_color())
        for r in rows:
            ax.scatter(r["train_fraction"], _val(r["m"]["macro_auc"]), s=10, color=line.get_color(), alpha=0.6)
        n_by_f = {f: max(r["n_train"] for r in rows if r["train_fraction"] == f) for f in fracs}
    ax.set_xscale("log")
    ax.set_xticks(fracs)
    ax.set_xticklabels([f"{f:g}\n(n={n_by_f[f]})" for f in fracs], fontsize=8)
    ax.set_xlabel("fraction of training labels (stratified subsample)")
    ax.set_ylabel("test macro AUC")
    ax.set_title("Label efficiency: mean over seeds, band = seed range")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "label_efficiency.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_comparison(
    results: list[dict[str, Any]], comps: list[dict[str, Any]], names: dict[str, str], out: Path
) -> Path | None:
    """Bars of each feature set's best probe (macro AUC and balanced accuracy) with 95% CI error bars."""
    best = [(k, _best(rows)) for k, rows in _groups(results).items()]
    if len(best) < 2:
        return None
    labels = [f"{_label(names, fs, m)}\nlayer {b['layer']} · {_short(run)}" for (run, fs, _, m), b in best]
    x = np.arange(len(best))
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(best)), 4.5))
    for i, metric in enumerate(("macro_auc", "balanced_accuracy")):
        v = np.array([_val(b["m"][metric]) for _, b in best])
        err = np.array(
            [
                [v[j] - _val(b["m"][metric], "ci_low"), _val(b["m"][metric], "ci_high") - v[j]]
                for j, (_, b) in enumerate(best)
            ]
        ).T
        ax.bar(x + (i - 0.5) * 0.38, v, 0.38, yerr=err, capsize=4, label=metric.replace("_", " "))
        for j in range(len(v)):
            top = v[j] + (err[1, j] if np.isfinite(err[1, j]) else 0)
            ax.text(x[j] + (i - 0.5) * 0.38, top + 0.01, f"{v[j]:.3f}", ha="center", va="bottom", fontsize=7)
    by_probe = {c["probe_a"]: c for c in comps if c["metric"] == "macro_auc"}
    for j, (_, b) in enumerate(best):
        c = by_probe.get(b["probe_id"])
        if c is not None and c["p_bootstrap"] is not None:
            ax.text(x[j], 0.05, f"ΔAUC {c['diff']:+.3f}\np={c['p_bootstrap']:.3g}", ha="center", fontsize=7)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("test metric (95% bootstrap CI)")
    ax.set_title(f"Feature sets compared on the same test images ({best[0][1]['task']})")
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = out / "comparison.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _cell(entry: dict | None) -> str:
    if not entry or entry.get("value") is None:
        return "undefined"
    if entry.get("ci_low") is None:
        return f"{entry['value']:.3f}"
    return f"{entry['value']:.3f} [{entry['ci_low']:.3f}, {entry['ci_high']:.3f}]"


def write_summary(
    results: list[dict[str, Any]],
    comps: list[dict[str, Any]],
    names: dict[str, str],
    images: list[Path],
    out: Path,
    *,
    warnings: Sequence[str] = (),
    external: Sequence[dict[str, Any]] = (),
    evidence: Sequence[str] = (),
) -> Path:
    """summary.md: every probe's test metrics with CIs, calibration, operating points, external test sets, the
    comparisons, and links to the plots."""
    boots = sorted({int(r["n_boot"]) for r in results if r.get("n_boot")})
    replicates = " or ".join(f"{b:,}" for b in boots) or "an unrecorded number of"
    lines = [
        "# medprobe report",
        "",
        f"Test-split metrics with 95% bootstrap CIs ({replicates} replicates). "
        "C (probes), k (kNN) and the best layer were chosen on training rows only, by the metric in the "
        "'chosen by' column (ties between C values broken by held-out log loss); zero-shot rows fit nothing.",
        "",
        *(f"> **Warning:** {w}" for w in warnings),
        *([""] if warnings else []),
    ]
    lines += _methods_table(results, names)
    head = (
        "| run | feature set | method | task | layer | fraction | seed | chosen | chosen by | n train | n test "
        "| macro AUC | bal. acc | macro F1 |"
    )
    lines += [head, "|" + "---|" * 14]
    for r in results:
        m = r["m"]
        method = r.get("method") or "probe"
        chosen_by = "-" if method == "zeroshot" else (m.get("selected_by") or "primary metric")
        if (m.get("c_tied") or 1) > 1:
            chosen_by += f" ({m['c_tied']} C tied; log loss)"
        lines.append(
            f"| {r['run_id']} | {names[r['feature_set_id']]} | {method} | {r['task']} | {r['layer']} "
            f"| {r['train_fraction']:g} | {r['seed']} | {chosen(r)} | {chosen_by} | {r['n_train']} | {r['n_test']} "
            f"| {_cell(m['macro_auc'])} | {_cell(m['balanced_accuracy'])} | {_cell(m['macro_f1'])} |"
        )
    lines += clinical_tables(results, external, names)
    lines += list(evidence)  # where the probes' evidence lies (medprobe heatmap), when they have maps
    if comps:
        lines += [
            "",
            "## Paired comparisons (A - B on the same test images)",
            "",
            "| A | B | metric | A | B | A-B [95% CI] | p (bootstrap) | p (study's t-test) | p (DeLong) |",
            "|" + "---|" * 9,
        ]
        for c in comps:
            if c["diff"] is None:
                continue
            lines.append(
                f"| {names[c['feature_set_a']]} l{c['layer_a']} | {names[c['feature_set_b']]} l{c['layer_b']} "
                f"| {c['metric']} | {c['value_a']:.3f} | {c['value_b']:.3f} | {c['diff']:+.3f} [{c['ci_low']:+.3f}, "
                f"{c['ci_high']:+.3f}] | {_p(c['p_bootstrap'])} | {_p(c['p_ttest'])} | {_p(c.get('p_delong'))} |"
            )
    undefined = {k: v for r in results for k, v in r["m"].get("undefined", {}).items()}
    if undefined:
        lines += ["", "## Undefined metrics", ""] + [f"- {k}: {v}" for k, v in undefined.items()]
    lines += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in images]
    path = out / "summary.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _methods_table(results: list[dict[str, Any]], names: dict[str, str]) -> list[str]:
    """When more than one method is reported: each (feature set, task, method)'s best full-data result side by
    side (the layer chosen on training rows), before the per-layer table."""
    best: dict[tuple[str, str, str], dict] = {}
    for (_, fs, task, method), rows in _groups(results).items():
        b = _best(rows)
        key = (fs, task, method)
        if key not in best or (b["m"].get("cv_mean") or -np.inf) > (best[key]["m"].get("cv_mean") or -np.inf):
            best[key] = b
    if len({k[2] for k in best}) < 2:
        return []
    lines = [
        "## Methods side by side",
        "",
        "| feature set | task | method | layer | chosen | n test | macro AUC | bal. acc | macro F1 |",
        "|" + "---|" * 9,
    ]
    order = {"probe": 0, "knn": 1, "zeroshot": 2}
    for (fs, task, method), r in sorted(best.items(), key=lambda kv: (kv[0][0], kv[0][1], order.get(kv[0][2], 3))):
        m = r["m"]
        lines.append(
            f"| {names[fs]} | {task} | {method} | {r['layer']} | {chosen(r)} | {r['n_test']} | {_cell(m['macro_auc'])} "
            f"| {_cell(m['balanced_accuracy'])} | {_cell(m['macro_f1'])} |"
        )
    return [*lines, "", "## Every result", ""]


def incomplete_runs(store: FeatureStore, run_ids: list[str]) -> list[str]:
    """Why each of ``run_ids`` may be incomplete: a run that did not finish (running, abandoned, failed, interrupted),
    or probes without their predictions (a process killed between the two writes)."""
    from medprobe.featurestore import effective_status

    out = []
    rows = store.sql("SELECT run_id, status, host, pid FROM runs WHERE list_contains(?, run_id)", [run_ids]).to_pylist()
    for row in rows:
        status = effective_status(row)
        if status != "finished":
            out.append(f"run {row['run_id']} is {status}: its results may be incomplete")
    bare = store.sql(
        "SELECT r.run_id, count(*) AS n FROM probe_results r ANTI JOIN predictions p USING (run_id, probe_id) "
        "WHERE list_contains(?, r.run_id) GROUP BY 1",
        [run_ids],
    ).to_pylist()
    out += [f"run {r['run_id']}: {r['n']} probe(s) have no stored predictions (ROC curves omit them)" for r in bare]
    return out


def write_report(store: FeatureStore, run_ids: list[str], out_dir: str) -> list[Path]:
    """Write every applicable plot and summary.md for ``run_ids`` into ``out_dir``; returns the paths.

    Runs that may be incomplete are reported anyway, flagged at the top of summary.md (and by the CLI on stderr).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results, comps, names = _load(store, list(run_ids))
    results, external = _external(results)
    warnings = incomplete_runs(store, list(run_ids))
    images = [
        p
        for p in (
            plot_layer_curves(results, names, out),
            plot_label_efficiency(results, names, out),
            plot_comparison(results, comps, names, out),
        )
        if p is not None
    ]
    images += plot_roc(store, results, names, out)
    for (run_id, fs, task, method), rows in _groups(results).items():
        if method != "probe":
            continue
        best, stem = _best(rows), f"{run_id}_{fs[:12]}"
        title = f"{task}: {_label(names, fs, method)}, layer {best['layer']}"
        images += [p for p in (plot_reliability(store, best, title, out, stem), plot_subgroups(best, title, out, stem))
                   if p is not None]  # fmt: skip
    from medprobe.trainer.heatmaps import evidence_tables

    evidence = evidence_tables(store, [r["probe_id"] for r in results if r.get("method", "probe") == "probe"])
    return [*images, write_summary(results, comps, names, images, out, warnings=warnings, external=external,
                                   evidence=evidence)]  # fmt: skip


def _p(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"
