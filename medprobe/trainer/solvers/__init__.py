"""L2 logistic-regression probe solvers behind one interface, and a scikit-learn-like estimator.

Compare medprobe with scikit-learn in two lines::

    p_torch = LogisticProbe(C=0.1).fit(X, y).predict_proba(X_test)
    p_sk = LogisticProbe(C=0.1, solver="sklearn").fit(X, y).predict_proba(X_test)
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Protocol

import numpy as np

from medprobe.errors import InvalidInputError
from medprobe.schemas.vocab import SOLVERS
from medprobe.trainer.solvers.base import FittedProbe, OnIteration, ProbeBatch, ProbeKind, logits_to_proba


class Solver(Protocol):
    """Fits a :class:`ProbeBatch` of probes on a list of layers (same rows)."""

    name: str

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
    ) -> list[list[FittedProbe]]: ...


def solver_session(solver: Solver) -> AbstractContextManager[Any]:
    """The solver's session (solves inside reuse their data preparation; see ``TorchSolver.session``), or a no-op
    for solvers without one."""
    session = getattr(solver, "session", None)
    return session() if callable(session) else nullcontext()


def get_solver(name: str, **options: Any) -> Solver:
    """The solver called ``name`` (torch | sklearn | cuml) built with ``options``."""
    if name == "torch":
        from medprobe.trainer.solvers.torch_lbfgs import TorchSolver

        return TorchSolver(**options)
    if name == "sklearn":
        from medprobe.trainer.solvers.sklearn_ref import SklearnSolver

        return SklearnSolver(**options)
    if name == "cuml":
        from medprobe.trainer.solvers.cuml_solver import CumlSolver

        return CumlSolver(**options)
    raise InvalidInputError(f"unknown solver {name!r}: choose one of {', '.join(SOLVERS)}")


class LogisticProbe:
    """scikit-learn-style L2 logistic regression on standardised features, any medprobe solver.

    ``y``: class labels (binary / multiclass), or a (rows, findings) 0/1 matrix (multilabel).
    Attributes after ``fit``: ``coef_`` (classes, features; binary (1, features)) in standardised units,
    ``intercept_``, ``classes_``, ``mean_``, ``scale_``, ``n_iter_``, ``converged_``.
    """

    def __init__(
        self, C: float = 1.0, *, solver: str = "torch", class_weight: str | None = None, **solver_options: Any
    ) -> None:
        self.C, self.solver, self.class_weight, self.solver_options = C, solver, class_weight, solver_options

    def fit(self, X: np.ndarray, y: np.ndarray) -> LogisticProbe:
        """Fit on all rows of ``X``."""
        y = np.asarray(y)
        if y.ndim == 2:
            kind: ProbeKind = "multilabel"
            self.classes_ = np.arange(y.shape[1])
            yi = y.astype(int)
        else:
            self.classes_, yi = np.unique(y, return_inverse=True)
            if len(self.classes_) < 2:
                raise InvalidInputError("fit needs at least two classes in y")
            kind = "binary" if len(self.classes_) == 2 else "multiclass"
        n_out = len(self.classes_)
        solver = get_solver(self.solver, **self.solver_options)
        batch = ProbeBatch.single(self.C, np.arange(len(X)))
        self.probe_ = solver.fit_many([X], yi, kind, n_out, batch, class_weight=self.class_weight)[0][0]
        self.coef_, self.intercept_ = self.probe_.coef, self.probe_.intercept
        self.mean_, self.scale_ = self.probe_.mean, self.probe_.scale
        self.n_iter_, self.converged_ = self.probe_.n_iter, self.probe_.converged
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        out = self.probe_.decision_function(X)
        return out[:, 0] if self.probe_.kind == "binary" else out

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return logits_to_proba(self.probe_.decision_function(X), self.probe_.kind)

    def predict(self, X: np.ndarray) -> np.ndarray:
        proba = self.predict_proba(X)
        if self.probe_.kind == "multilabel":
            return (proba >= 0.5).astype(int)
        return self.classes_[proba.argmax(1)]


__all__ = ["SOLVERS", "FittedProbe", "LogisticProbe", "ProbeBatch", "Solver", "get_solver"]
