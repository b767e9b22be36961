"""cuML's GPU LogisticRegression, one probe at a time (one-vs-rest for multilabel)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from medprobe.errors import MedprobeError
from medprobe.trainer.solvers.base import FittedProbe, OnIteration, ProbeBatch, ProbeKind, fit_each


class CumlNotInstalledError(MedprobeError):
    """cuML was requested but cannot be imported."""


def _import_cuml() -> Any:
    try:
        from cuml.linear_model import LogisticRegression
    except ImportError as e:
        raise CumlNotInstalledError(
            f"solver 'cuml' needs RAPIDS cuML, which is not importable here ({e}): "
            "install it with `pip install medprobe[cuml]` on a CUDA 12 machine, or use --solver torch"
        ) from e
    return LogisticRegression


class CumlSolver:
    """cuML ``LogisticRegression(penalty='l2')`` on standardised rows; same objective as scikit-learn."""

    name = "cuml"

    def __init__(self, *, tol: float = 1e-4, max_iter: int = 1000) -> None:
        self._cls = _import_cuml()
        self.tol, self.max_iter = tol, max_iter

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
        """Fit every (layer, column) probe of ``batch``; returns probes indexed [layer][column]."""

        def fit_one(Z: np.ndarray, t_rows: np.ndarray, C: float) -> tuple[np.ndarray, np.ndarray, int, bool]:
            targets = [t_rows[:, k] for k in range(n_classes)] if kind == "multilabel" else [t_rows]
            coefs, icpts = [], []
            for t in targets:
                clf = self._cls(
                    penalty="l2",
                    C=C,
                    tol=self.tol,
                    max_iter=self.max_iter,
                    class_weight=class_weight,
                    output_type="numpy",
                )
                clf.fit(Z, t.astype(np.float32))
                coefs.append(np.asarray(clf.coef_, dtype=np.float64).reshape(-1, Z.shape[1]))
                icpts.append(np.asarray(clf.intercept_, dtype=np.float64).ravel())
            return np.concatenate(coefs), np.concatenate(icpts), 0, True

        return fit_each(layers, y, kind, batch, fit_one, dtype=np.float32)
