"""What every solver takes and returns: one probe specification in, one fitted probe out."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy.special import expit

from medprobe.errors import InvalidInputError

ProbeKind = Literal["binary", "multiclass", "multilabel"]
# a probe's weights on raw features: coef (outputs, features) and intercept (outputs,), logits = x @ coef.T + intercept
RawWeights = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class ProbeBatch:
    """Many probes over the same rows: layers (G) x probe columns (M).

    Column ``m`` trains on ``row_sets[row_set_of[m]]`` (indices into the layer's rows) with inverse
    regularisation ``C[g, m]`` on layer ``g``. Folds x C values x training fractions are columns.

    ``start[g][m]`` (optional) is a warm start: the raw-feature weights of a nearby solution (the same row set at a
    neighbouring C, or the mean of fold probes for a refit). It changes where the solver begins, never the minimiser;
    solvers that cannot warm-start (the scikit-learn and cuML references) start from zero.
    """

    row_sets: Sequence[np.ndarray]
    row_set_of: np.ndarray  # (M,) int
    C: np.ndarray  # (G, M) float
    start: Sequence[Sequence[RawWeights | None]] | None = None

    @classmethod
    def single(cls, C: float, rows: np.ndarray, n_layers: int = 1) -> ProbeBatch:
        """One probe per layer with the same C and rows."""
        return cls([np.asarray(rows)], np.zeros(1, dtype=int), np.full((n_layers, 1), float(C)))

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.C.shape[0]), int(self.C.shape[1])


@dataclass
class FittedProbe:
    """A fitted L2 logistic-regression probe on standardised features.

    ``coef`` is (classes, features) in standardised units (binary: (1, features), as scikit-learn),
    ``mean`` and ``scale`` standardise raw features: ``z = (x - mean) / scale``.
    """

    kind: ProbeKind
    coef: np.ndarray
    intercept: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    C: float
    n_iter: int = 0
    converged: bool = True
    extra: dict = field(default_factory=dict)

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Logits (rows, classes) for raw features ``X``."""
        Z = (np.asarray(X, dtype=np.float64) - self.mean) / self.scale
        return Z @ self.coef.T.astype(np.float64) + self.intercept.astype(np.float64)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Probabilities: (rows, 2) binary, (rows, classes) softmax, (rows, findings) independent sigmoids."""
        return logits_to_proba(self.decision_function(X), self.kind)

    def raw_weights(self) -> RawWeights:
        """The same decision function on raw features: ``x @ coef.T + intercept`` (a warm start for other rows)."""
        coef = np.asarray(self.coef, dtype=np.float64) / self.scale
        return coef, np.asarray(self.intercept, dtype=np.float64) - coef @ np.asarray(self.mean, dtype=np.float64)


def mean_raw_weights(probes: Sequence[FittedProbe]) -> RawWeights:
    """The average raw-feature weights of probes on one layer (e.g. the folds at one C): a refit's warm start."""
    pairs = [p.raw_weights() for p in probes]
    return np.mean([c for c, _ in pairs], axis=0), np.mean([b for _, b in pairs], axis=0)


def logits_to_proba(logits: np.ndarray, kind: ProbeKind) -> np.ndarray:
    """Turn logits into the probabilities scikit-learn's ``predict_proba`` would return."""
    logits = np.asarray(logits, dtype=np.float64)
    if kind == "multiclass":
        z = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)
    p = expit(logits)  # no overflow warning for large negative logits
    if kind == "binary":
        return np.column_stack([1.0 - p[:, 0], p[:, 0]])
    return p


def encode_targets(y: np.ndarray, kind: ProbeKind, n_classes: int) -> np.ndarray:
    """Targets as a float matrix: (rows, 1) for binary, one-hot for multiclass, indicators for multilabel."""
    y = np.asarray(y)
    if kind == "multilabel":
        if y.ndim != 2 or y.shape[1] != n_classes:
            raise InvalidInputError(f"multilabel targets must be (rows, {n_classes}) indicators, got {y.shape}")
        return y.astype(np.float64)
    if y.ndim != 1:
        raise InvalidInputError(f"{kind} targets must be a vector of class indices, got shape {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise InvalidInputError(f"class indices must lie in [0, {n_classes}), got {y.min()}..{y.max()}")
    if kind == "binary":
        return y.reshape(-1, 1).astype(np.float64)
    out = np.zeros((y.size, n_classes))
    out[np.arange(y.size), y.astype(int)] = 1.0
    return out


def balanced_weights(T: np.ndarray, kind: ProbeKind) -> np.ndarray:
    """scikit-learn's ``class_weight='balanced'`` as per-(row, output) weights for targets ``T``.

    Binary / multiclass: ``n / (n_classes * count[class])`` per row (shape (rows, 1)).
    Multilabel (one-vs-rest): per finding, ``n / (2 * count)`` of the row's side (shape (rows, findings)).
    """
    n = T.shape[0]
    if kind == "multiclass":
        counts = T.sum(axis=0)
        k = int((counts > 0).sum())
        w = np.where(counts > 0, n / (k * np.maximum(counts, 1)), 0.0)
        return (T @ w).reshape(-1, 1)
    pos = T.sum(axis=0)
    neg = n - pos
    k = (pos > 0).astype(float) + (neg > 0).astype(float)
    w_pos = n / (k * np.maximum(pos, 1))
    w_neg = n / (k * np.maximum(neg, 1))
    return T * w_pos + (1.0 - T) * w_neg


def standardisation(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale as scikit-learn's StandardScaler (population std; 1 where a feature is constant)."""
    X = np.asarray(X, dtype=np.float64)
    mean = X.mean(axis=0)
    std = X.std(axis=0)
    std[std < 10 * np.finfo(np.float64).eps * np.maximum(np.abs(mean), 1.0)] = 1.0
    return mean, std


def check_batch(batch: ProbeBatch, n_layers: int, n_rows: int) -> None:
    """Shapes agree, every C is positive and every row set is non-empty and in range."""
    C = np.asarray(batch.C, dtype=float)
    if C.ndim != 2 or C.shape[0] != n_layers or C.shape[1] != len(batch.row_set_of):
        raise InvalidInputError(f"C must be (layers={n_layers}, probes={len(batch.row_set_of)}), got {C.shape}")
    if not np.all(C > 0) or not np.all(np.isfinite(C)):
        raise InvalidInputError(f"every C must be positive and finite, got {C.ravel().tolist()}")
    if batch.start is not None and (len(batch.start) != n_layers or any(len(r) != C.shape[1] for r in batch.start)):
        raise ValueError("a warm start needs one entry (or None) per layer x column")
    rs = np.asarray(batch.row_set_of)
    if rs.size and (rs.min() < 0 or rs.max() >= len(batch.row_sets)):
        raise InvalidInputError("row_set_of points past the row sets")
    for i, r in enumerate(batch.row_sets):
        r = np.asarray(r)
        if r.size == 0 or r.min() < 0 or r.max() >= n_rows:
            raise InvalidInputError(f"row set {i}: training rows must be non-empty indices in [0, {n_rows})")


# (standardised rows, their targets, C) -> (coef, intercept, iterations, converged)
FitOne = Callable[[np.ndarray, np.ndarray, float], tuple[np.ndarray, np.ndarray, int, bool]]
OnIteration = Callable[[int, int], None]  # (probes advanced, probes stalled) since the last call


def fit_each(
    layers: Sequence[np.ndarray],
    y: np.ndarray,
    kind: ProbeKind,
    batch: ProbeBatch,
    fit_one: FitOne,
    dtype: type = np.float64,
) -> list[list[FittedProbe]]:
    """Fit the probes of ``batch`` one at a time with ``fit_one``; returns probes indexed [layer][column].

    Standardisation statistics come from each probe's own training rows and are computed once per
    (layer, row set). Used by the reference solvers that fit one probe per call.
    """
    check_batch(batch, len(layers), int(layers[0].shape[0]))
    y = np.asarray(y)
    out = []
    for g, X in enumerate(layers):
        X = np.asarray(X, dtype=np.float64)
        stats: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        row = []
        for m, rs in enumerate(np.asarray(batch.row_set_of)):
            rows = np.asarray(batch.row_sets[rs])
            if rs not in stats:
                mean, scale = standardisation(X[rows])
                stats[rs] = (mean, scale, ((X[rows] - mean) / scale).astype(dtype, copy=False))
            mean, scale, Z = stats[rs]
            C = float(batch.C[g, m])
            coef, icpt, n_iter, ok = fit_one(Z, y[rows], C)
            row.append(FittedProbe(kind, coef, icpt, mean, scale, C, n_iter, ok))
        out.append(row)
    return out
