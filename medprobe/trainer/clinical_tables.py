"""The clinical tables of ``summary.md``: calibration, operating points, subgroups and external test sets of each
run's best probe (Markdown, values with their 95% CIs)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def ci_cell(entry: dict[str, Any] | None) -> str:
    """A metric entry as ``value [low, high]`` with three decimals (``-`` when it has no value)."""
    if not entry or entry.get("value") is None:
        return "-"
    if entry.get("ci_low") is None:
        return f"{entry['value']:.3f}"
    return f"{entry['value']:.3f} [{entry['ci_low']:.3f}, {entry['ci_high']:.3f}]"


def _best_per_run(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The probe with the best selection score per (run, feature set, task), full training data only."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in results:
        if (r.get("method") or "probe") == "probe":
            groups.setdefault((r["run_id"], r["feature_set_id"], r["task"]), []).append(r)
    out = []
    for rows in groups.values():
        full = [r for r in rows if r["train_fraction"] == 1.0] or rows
        scored = [r for r in full if r["m"].get("cv_mean") is not None] or full
        sign = -1.0 if scored[0]["m"].get("selected_by") == "log_loss" else 1.0
        out.append(max(scored, key=lambda r: (sign * (r["m"].get("cv_mean") or 0.0), -r["layer"])))
    return out


def clinical_tables(results: Sequence[dict[str, Any]], external: Sequence[dict[str, Any]],
                    names: dict[str, str]) -> list[str]:  # fmt: skip
    """Markdown lines: calibration and operating points of each best probe, its subgroups, external test sets."""
    best = _best_per_run(results)
    lines: list[str] = []
    if any("brier" in r["m"] for r in best):
        lines += ["", "## Calibration (best layer)", "", "| run | feature set | layer | Brier | ECE | bins |",
                  "|" + "---|" * 6]  # fmt: skip
        lines += [f"| {r['run_id']} | {names[r['feature_set_id']]} | {r['layer']} | {ci_cell(r['m'].get('brier'))} "
                  f"| {ci_cell(r['m'].get('ece'))} | {r['m'].get('ece_bins', '-')} equal-mass |"
                  for r in best if "brier" in r["m"]]  # fmt: skip
    points = [(r, c, p) for r in best for c, ps in (r["m"].get("operating_points") or {}).items() for p in ps]
    if points:
        lines += ["", "## Operating points (thresholds from out-of-fold training predictions; test-row rates)", "",
                  "| run | layer | class | rule | threshold | sensitivity | specificity | PPV | NPV | F1 |",
                  "|" + "---|" * 10]  # fmt: skip
        for r, c, p in points:
            t = "-" if p["threshold"] is None else f"{p['threshold']:.3f}"
            rates = " | ".join(ci_cell(p.get(k)) for k in ("sensitivity", "specificity", "ppv", "npv", "f1"))
            lines.append(f"| {r['run_id']} | {r['layer']} | {c} | {p['rule']} | {t} | {rates} |")
    blocks = [(r, b) for r in best for b in r["m"].get("subgroups") or []]
    if blocks:
        lines += ["", "## Subgroups (test rows; groups under the minimum size flagged, not scored)", "",
                  "| run | column | group | n | macro AUC | balanced accuracy |", "|" + "---|" * 6]  # fmt: skip
        for r, b in blocks:
            for g in b["groups"]:
                auc = g.get("flagged") or ci_cell(g.get("macro_auc"))
                lines.append(f"| {r['run_id']} | {b['column']} | {g['group']} | {g['n']} | {auc} "
                             f"| {ci_cell(g.get('balanced_accuracy'))} |")  # fmt: skip
            if b.get("largest_gap"):
                gap = b["largest_gap"]
                lines.append(f"| {r['run_id']} | {b['column']} | largest gap: {' - '.join(gap['between'])} | | "
                             f"{ci_cell(gap)} | |")  # fmt: skip
    if external:
        lines += ["", "## External test sets (the probe fitted on the training dataset, applied unchanged)", "",
                  "| run | feature set | layer | scored on | n | macro AUC | bal. acc | Brier | ECE |",
                  "|" + "---|" * 9]  # fmt: skip
        for r in external:
            m = r["m"]
            lines.append(f"| {r['run_id']} | {names[r['feature_set_id']]} | {r['layer']} | {r['dataset']} "
                         f"| {r['n_test']} | {ci_cell(m.get('macro_auc'))} | {ci_cell(m.get('balanced_accuracy'))} "
                         f"| {ci_cell(m.get('brier'))} | {ci_cell(m.get('ece'))} |")  # fmt: skip
    return lines
