"""The reference solver: scikit-learn's LogisticRegression (lbfgs), one probe at a time."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from medprobe.trainer.solvers.base import FittedProbe, OnIteration, ProbeBatch, ProbeKind, fit_each


class SklearnSolver:
    """``LogisticRegression(solver='lbfgs')`` on StandardScaler-standardised rows; one-vs-rest for multilabel."""

    name = "sklearn"

    def __init__(self, *, tol: float = 1e-4, max_iter: int = 1000) -> None:
        self.tol, self.max_iter = tol, max_iter

    def _fit_one(
        self, Z: np.ndarray, y: np.ndarray, kind: ProbeKind, n_classes: int, C: float, class_weight: str | None
    ) -> tuple[np.ndarray, np.ndarray, int, bool]:
        targets = [y[:, k] for k in range(n_classes)] if kind == "multilabel" else [y]
        coefs, icpts, iters, ok = [], [], 0, True
        for t in targets:
            clf = LogisticRegression(
                C=C, solver="lbfgs", tol=self.tol, max_iter=self.max_iter, class_weight=class_weight
            )
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                clf.fit(Z, t)
            ok = ok and not any(issubclass(w.category, ConvergenceWarning) for w in caught)
            iters = max(iters, int(np.max(clf.n_iter_)))
            if kind == "multiclass" and clf.coef_.shape[0] != n_classes:
                full = np.zeros((n_classes, Z.shape[1]))
                full_b = np.full(n_classes, -np.inf)
                full[clf.classes_.astype(int)] = clf.coef_
                full_b[clf.classes_.astype(int)] = clf.intercept_
                coefs.append(full)
                icpts.append(full_b)
            else:
                coefs.append(clf.coef_)
                icpts.append(clf.intercept_)
        return np.concatenate(coefs), np.concatenate(icpts), iters, ok

    def fit_many(
        self,
        layers: Sequence[np.ndarray],
        y: np.ndarray,
        kind: ProbeKind,
        n_classes: int,
        batch: ProbeBatch,
        *,
        class_weight: str | None = None,
        on_iteration: OnIteration | None = None,
    ) -> list[list[FittedProbe]]:
        """Fit every (layer, column) probe of ``batch`` one by one; returns probes indexed [layer][column]."""
        return fit_each(layers, y, kind, batch, lambda Z, t, C: self._fit_one(Z, t, kind, n_classes, C, class_weight))
