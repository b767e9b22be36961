"""Point estimates of the probe metrics, computed with scikit-learn.

Binary / multiclass: accuracy, balanced accuracy, macro-F1 (over the classes present in truth or
prediction, scikit-learn's default), one-vs-rest AUC per class and their macro mean (over classes whose
AUC is defined). Multilabel: subset accuracy, mean per-finding balanced accuracy, macro-F1 over findings,
per-finding AUC and their mean. An AUC that is undefined (the test rows hold one class only) is ``None``
with a reason, never NaN.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score

from medprobe.trainer.solvers.base import ProbeKind

SCALAR_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc")


class UndefinedMetricWarning(UserWarning):
    """A metric cannot be computed on these test rows (e.g. AUC with a single class)."""


@dataclass
class PointMetrics:
    """Metric values; ``None`` marks an undefined value, explained in ``reasons``."""

    values: dict[str, float | None]
    auc_per_class: dict[str, float | None]
    reasons: dict[str, str] = field(default_factory=dict)


def predicted_labels(proba: np.ndarray, kind: ProbeKind) -> np.ndarray:
    """Class index per row (argmax), or 0/1 finding indicators at 0.5 for multilabel."""
    return (proba >= 0.5).astype(int) if kind == "multilabel" else proba.argmax(1)


def one_vs_rest(y: np.ndarray, kind: ProbeKind, n_classes: int) -> np.ndarray:
    """(rows, classes) 0/1 indicator matrix of the truth."""
    if kind == "multilabel":
        return np.asarray(y).astype(bool)
    out = np.zeros((len(y), n_classes), dtype=bool)
    out[np.arange(len(y)), np.asarray(y).astype(int)] = True
    return out


def class_scores(proba: np.ndarray, kind: ProbeKind) -> np.ndarray:
    """(rows, classes) scores used for one-vs-rest AUC (binary: p0 and p1)."""
    return np.asarray(proba, dtype=np.float64)


def point_metrics(y: np.ndarray, proba: np.ndarray, kind: ProbeKind, class_names: list[str]) -> PointMetrics:
    """All metrics of one probe on its test rows."""
    y = np.asarray(y)
    pred = predicted_labels(proba, kind)
    K = len(class_names)
    reasons: dict[str, str] = {}
    if kind == "multilabel":
        Y = y.astype(int)
        bal = [_binary_balanced_accuracy(Y[:, k], pred[:, k]) for k in range(K)]
        values: dict[str, float | None] = {
            "accuracy": float(accuracy_score(Y, pred)),
            "balanced_accuracy": float(np.mean(bal)),
            "macro_f1": float(f1_score(Y, pred, average="macro", zero_division=0)),
        }
    else:
        values = {
            "accuracy": float(accuracy_score(y, pred)),
            "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
            "macro_f1": float(f1_score(y, pred, average="macro")),
        }
    truth = one_vs_rest(y, kind, K)
    scores = class_scores(proba, kind)
    auc: dict[str, float | None] = {}
    for k, name in enumerate(class_names):
        n_pos = int(truth[:, k].sum())
        if n_pos == 0 or n_pos == len(truth):
            auc[name] = None
            side = "no" if n_pos == 0 else "only"
            reasons[f"auc_per_class.{name}"] = f"test rows have {side} positives of {name!r}: AUC undefined"
        else:
            auc[name] = float(roc_auc_score(truth[:, k], scores[:, k]))
    defined = [v for v in auc.values() if v is not None]
    values["macro_auc"] = float(np.mean(defined)) if defined else None
    if not defined:
        reasons["macro_auc"] = "every class's AUC is undefined on these test rows (a single class): no AUC"
    elif len(defined) < K:
        reasons["macro_auc"] = f"mean over the {len(defined)} of {K} classes whose AUC is defined"
    for key, why in reasons.items():
        warnings.warn(f"{key}: {why}", UndefinedMetricWarning, stacklevel=2)
    return PointMetrics(values, auc, reasons)


def _binary_balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    recalls = [float((pred[y == c] == c).mean()) for c in (0, 1) if (y == c).any()]
    return float(np.mean(recalls))
