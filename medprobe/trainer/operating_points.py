"""Operating points: thresholds chosen on out-of-fold predictions of the training rows (never the test rows), then
sensitivity, specificity, PPV, NPV and F1 on the test rows at each threshold, with bootstrap CIs.

A class is positive when its probability is at least the threshold (scikit-learn's ``roc_curve`` convention). Binary
tasks have one operating point set, for the positive class (the second class); multiclass and multilabel tasks one
per class, one-vs-rest. The rules, each a candidate threshold of the out-of-fold ROC curve:

- ``youden``: the threshold that maximises sensitivity + specificity - 1 (the smallest threshold among ties);
- ``sens=S``: the largest threshold whose out-of-fold sensitivity is at least S (the most specific one that reaches
  the target);
- ``spec=S``: the smallest threshold whose out-of-fold specificity is at least S (the most sensitive one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import roc_curve

from medprobe.errors import InvalidInputError
from medprobe.trainer.bootstrap import ci_entry
from medprobe.trainer.metrics import one_vs_rest
from medprobe.trainer.solvers.base import ProbeKind

DEFAULT_OPERATING_POINTS = ("youden", "sens=0.9", "spec=0.9")
RATES = ("sensitivity", "specificity", "ppv", "npv", "f1")


@dataclass(frozen=True)
class Rule:
    """One way to choose a threshold: ``youden``, ``sens`` or ``spec`` (with its target)."""

    name: str
    target: float | None = None

    @property
    def label(self) -> str:
        return self.name if self.target is None else f"{self.name}={self.target:g}"


def parse_rules(values: Sequence[str]) -> list[Rule]:
    """``["youden", "sens=0.9", "spec=0.95"]`` as rules; a target outside (0, 1) or an unknown rule is refused."""
    rules = []
    for raw in values:
        text = str(raw).strip().lower()
        if text == "youden":
            rules.append(Rule("youden"))
            continue
        name, _, target = text.partition("=")
        if name not in ("sens", "spec") or not target:
            raise InvalidInputError(f"--operating-points {raw!r}: use youden, sens=S or spec=S (e.g. sens=0.9)")
        try:
            value = float(target)
        except ValueError:
            raise InvalidInputError(f"--operating-points {raw!r}: {target!r} is not a number") from None
        if not 0.0 < value < 1.0:
            raise InvalidInputError(f"--operating-points {raw!r}: the target must lie strictly between 0 and 1")
        rules.append(Rule(name, value))
    if len({r.label for r in rules}) != len(rules):
        raise InvalidInputError(f"--operating-points {','.join(values)}: a rule is given twice")
    return rules


def choose_threshold(truth: np.ndarray, scores: np.ndarray, rule: Rule) -> float | None:
    """The rule's threshold on (out-of-fold) ``scores``; None when the rows hold one class only."""
    truth = np.asarray(truth).astype(bool)
    if truth.all() or not truth.any():
        return None
    fpr, tpr, thresholds = roc_curve(truth, scores, drop_intermediate=False)
    finite = np.isfinite(thresholds)
    fpr, tpr, thresholds = fpr[finite], tpr[finite], thresholds[finite]
    if rule.name == "youden":
        j = tpr - fpr
        return float(thresholds[np.flatnonzero(j == j.max())[-1]])  # thresholds fall: the last is the smallest
    if rule.name == "sens":
        ok = np.flatnonzero(tpr >= rule.target)
        return float(thresholds[ok[0]]) if len(ok) else None  # the first reaching the target is the largest
    ok = np.flatnonzero(1.0 - fpr >= rule.target)
    return float(thresholds[ok[-1]]) if len(ok) else None


def rates_under_weights(truth: np.ndarray, positive: np.ndarray, W: np.ndarray) -> dict[str, np.ndarray]:
    """Sensitivity, specificity, PPV, NPV and F1 under each weight row of ``W`` (NaN where undefined)."""
    truth, positive = np.asarray(truth).astype(bool), np.asarray(positive).astype(bool)
    tp, fp = W @ (truth & positive), W @ (~truth & positive)
    fn, tn = W @ (truth & ~positive), W @ (~truth & ~positive)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "sensitivity": tp / (tp + fn),
            "specificity": tn / (tn + fp),
            "ppv": tp / (tp + fp),
            "npv": tn / (tn + fn),
            "f1": 2 * tp / (2 * tp + fp + fn),
        }


def operating_points(
    y_oof: np.ndarray, proba_oof: np.ndarray, y_test: np.ndarray, proba_test: np.ndarray, kind: ProbeKind,
    class_names: Sequence[str], rules: Sequence[Rule], W: np.ndarray,
) -> dict[str, list[dict[str, Any]]]:  # fmt: skip
    """``{class: [{rule, threshold, n_oof, sensitivity: {value, ci_low, ci_high}, ...}]}``: thresholds from the
    out-of-fold rows, rates on the test rows with CIs over the bootstrap weights ``W`` (replicates x test rows)."""
    K = len(class_names)
    oof_truth = one_vs_rest(y_oof, kind, K)
    classes = [1] if kind == "binary" else list(range(K))
    chosen = {
        class_names[k]: [{"rule": rule.label, "threshold": choose_threshold(oof_truth[:, k], proba_oof[:, k], rule),
                          "n_oof": len(y_oof)} for rule in rules]
        for k in classes
    }  # fmt: skip
    return points_at(chosen, y_test, proba_test, kind, class_names, W)


def points_at(chosen: dict[str, list[dict[str, Any]]], y_test: np.ndarray, proba_test: np.ndarray, kind: ProbeKind,
              class_names: Sequence[str], W: np.ndarray) -> dict[str, list[dict[str, Any]]]:  # fmt: skip
    """The rates on the test rows at thresholds already chosen (``{class: [{rule, threshold, ...}]}``, e.g. a stored
    probe's), with CIs over the bootstrap weights ``W``."""
    test_truth = one_vs_rest(y_test, kind, len(class_names))
    ones = np.ones((1, len(y_test)))
    out: dict[str, list[dict[str, Any]]] = {}
    for name, points in chosen.items():
        k = list(class_names).index(name)
        out[name] = []
        for point in points:
            entry: dict[str, Any] = {key: point[key] for key in ("rule", "threshold", "n_oof") if key in point}
            if entry.get("threshold") is None:
                entry["undefined"] = "the out-of-fold rows cannot reach this target, or hold one side of the class"
            else:
                positive = proba_test[:, k] >= entry["threshold"]
                at, reps = rates_under_weights(test_truth[:, k], positive, ones), rates_under_weights(
                    test_truth[:, k], positive, W)  # fmt: skip
                entry.update({rate: ci_entry(_defined(at[rate][0]), reps[rate], len(W)) for rate in RATES})
            out[name].append(entry)
    return out


def _defined(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None
