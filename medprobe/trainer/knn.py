"""Weighted k-nearest-neighbour class probabilities on stored features (the DINOv2 evaluation's kNN).

Cosine similarity between L2-normalised features; each of the ``k`` nearest training rows votes for its label with
weight ``exp(similarity / temperature)`` (DINOv2: T = 0.07); the votes, divided by their sum, are the class
probabilities (multilabel: per finding, the weighted share of positive neighbours). Queries run in chunks whose
similarity block stays under a memory budget, on the GPU when one is given (float32), else on the CPU (float64, so
the neighbour order equals scikit-learn's), so 100,000 x 4,096 training features need no more than the budget beyond
the features themselves.

``choose_k`` picks k by the probes' grouped CV on training rows; ``medprobe train --method knn`` runs it per layer.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from medprobe.errors import InvalidInputError
from medprobe.trainer.bootstrap import replicate_metrics
from medprobe.trainer.protocol import LOWER_IS_BETTER, cv_splits, cv_strata, log_loss, stratify_key
from medprobe.trainer.solvers.base import ProbeKind

DINOV2_TEMPERATURE = 0.07
DEFAULT_BUDGET_BYTES = 256 << 20  # the (query chunk x training rows) similarity block


def _normalised(x: np.ndarray | torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=dtype, device=device)
    if not torch.isfinite(t).all():
        raise InvalidInputError("kNN features contain NaN or infinite values")
    return torch.nn.functional.normalize(t, dim=1)


def _device(device: str | torch.device | None) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def nearest(
    train: np.ndarray | torch.Tensor,
    query: np.ndarray | torch.Tensor,
    k: int,
    *,
    device: str | torch.device | None = None,
    budget_bytes: int = DEFAULT_BUDGET_BYTES,
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """``(first query row, similarities, indices)`` of each chunk's ``k`` most cosine-similar training rows.

    Exact (brute force): float64 on the CPU, so ties and order equal scikit-learn's; float32 on a GPU.
    """
    n = len(train)
    if not 1 <= k <= n:
        raise InvalidInputError(f"--k {k}: choose 1 to {n} (the number of training rows)")
    dev = _device(device)
    dtype = torch.float64 if dev.type == "cpu" else torch.float32  # CPU: exact neighbour order; GPU: fast
    T = _normalised(train, dev, dtype)
    Q = _normalised(query, dev, dtype)
    chunk = max(1, budget_bytes // (T.element_size() * n))
    for start in range(0, len(Q), chunk):
        top, idx = (Q[start : start + chunk] @ T.T).topk(k, dim=1)  # (chunk, k)
        yield start, top, idx


def knn_targets(y: np.ndarray, kind: ProbeKind, n_classes: int) -> np.ndarray:
    """The votes of each training row: one-hot class rows (binary: two columns, like ``predict_proba``), or the
    multilabel indicators themselves."""
    y = np.asarray(y)
    return y.astype(np.float64) if kind == "multilabel" else np.eye(n_classes)[y.astype(int)]


def knn_proba(
    train: np.ndarray | torch.Tensor,
    targets: np.ndarray,
    query: np.ndarray | torch.Tensor,
    k: int,
    *,
    temperature: float = DINOV2_TEMPERATURE,
    device: str | torch.device | None = None,
    budget_bytes: int = DEFAULT_BUDGET_BYTES,
) -> np.ndarray:
    """Class probabilities ``(queries, outputs)`` from the ``k`` most cosine-similar training rows.

    ``targets``: ``(train rows, outputs)`` one-hot rows (binary / multiclass) or 0/1 indicators (multilabel).
    """
    n = len(train)
    if temperature <= 0:
        raise InvalidInputError(f"the kNN temperature must be positive, got {temperature}")
    dev = _device(device)
    Y = torch.as_tensor(np.asarray(targets, dtype=np.float64), device=dev)
    if Y.ndim != 2 or Y.shape[0] != n:
        raise InvalidInputError(f"kNN targets must be (train rows, outputs) = ({n}, K), got {tuple(Y.shape)}")
    out = torch.empty((len(query), Y.shape[1]), dtype=torch.float64, device=dev)
    for start, top, idx in nearest(train, query, k, device=dev, budget_bytes=budget_bytes):
        weights = torch.exp((top.double() - top.double().amax(dim=1, keepdim=True)) / temperature)  # stable
        votes = torch.einsum("qk,qkc->qc", weights, Y[idx].double())
        out[start : start + len(top)] = votes / weights.sum(dim=1, keepdim=True)
    return out.cpu().numpy()


def label_precision_at_k(
    train: np.ndarray,
    y_train: np.ndarray,
    query: np.ndarray,
    y_query: np.ndarray,
    k: int,
    *,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Per query: the share of its ``k`` nearest training rows whose label equals the query's (multilabel: whose
    finding set is the same) -- the retrieval metric of image search."""
    yt, yq = np.asarray(y_train), np.asarray(y_query)
    out = np.empty(len(query))
    for start, _, idx in nearest(train, query, k, device=device):
        neighbours = yt[idx.cpu().numpy()]  # (chunk, k) or (chunk, k, findings)
        mine = yq[start : start + len(idx)]
        same = (neighbours == mine[:, None]) if yt.ndim == 1 else (neighbours == mine[:, None, :]).all(axis=2)
        out[start : start + len(idx)] = same.mean(axis=1)
    return out


DEFAULT_K_GRID: tuple[int, ...] = (10, 20, 50, 100, 200)  # DINOv2 reports 10, 20, 100, 200


def choose_k(
    X: np.ndarray,
    y: np.ndarray,
    targets: np.ndarray,
    kind: ProbeKind,
    n_classes: int,
    *,
    groups: np.ndarray | None,
    k_grid: Sequence[int] = DEFAULT_K_GRID,
    n_splits: int = 5,
    seed: int = 0,
    metric: str = "macro_auc",
    temperature: float = DINOV2_TEMPERATURE,
    device: str | torch.device | None = None,
    splits: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
) -> tuple[int, dict[str, list[float | None]]]:
    """The k with the best mean validation ``metric`` over stratified (grouped) folds of the *training* rows only.

    ``X``, ``y``, ``targets`` (one-hot; multilabel: indicators) and ``groups`` hold training rows alone, so no test
    row can reach the choice. Ties go to the smaller k; k values above a fold's training rows are skipped. Returns k
    and the fold scores per k. ``splits`` (positions into ``X``) replaces the folds, e.g. train -> val.
    """
    if splits is None:
        splits, _ = cv_splits(cv_strata(stratify_key(y, kind), kind, n_splits), groups, n_splits, seed)
    scores: dict[str, list[float | None]] = {}
    for k in k_grid:
        if k > min(len(tr) for tr, _ in splits):
            continue
        fold_scores: list[float | None] = []
        for tr, va in splits:
            proba = knn_proba(X[tr], targets[tr], X[va], k, temperature=temperature, device=device)
            if metric == "log_loss":
                value = log_loss(y[va], proba, kind)
            else:
                value = float(replicate_metrics(y[va], proba, kind, n_classes, np.ones((1, len(va))))[metric][0])
            fold_scores.append(value if np.isfinite(value) else None)
        scores[str(k)] = fold_scores
    if not scores:
        raise InvalidInputError(f"every k in {list(k_grid)} exceeds a fold's training rows; use smaller --k values")
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    means = {int(k): sign * float(np.mean(v)) for k, s in scores.items() if (v := [x for x in s if x is not None])}
    if not means:
        raise InvalidInputError(f"{metric} is undefined on every validation fold; use more training rows")
    best = max(means.values())
    return min(k for k, m in means.items() if m >= best - 1e-12), scores
