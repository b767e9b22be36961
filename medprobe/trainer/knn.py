"""Weighted k-nearest-neighbour class probabilities on stored features (the DINOv2 evaluation's kNN).

Cosine similarity between L2-normalised features; each of the ``k`` nearest training rows votes for its label with
weight ``exp(similarity / temperature)`` (DINOv2: T = 0.07); the votes, divided by their sum, are the class
probabilities (multilabel: per finding, the weighted share of positive neighbours). Queries run in chunks whose
similarity block stays under a memory budget, on the GPU when one is given, so 100,000 x 4,096 training features
need no more than the budget beyond the features themselves.

This is the building block of the kNN baseline (issue 11); choosing k by grouped CV and the CLI come on top.
"""

from __future__ import annotations

import numpy as np
import torch

from medprobe.errors import InvalidInputError

DINOV2_TEMPERATURE = 0.07
DEFAULT_BUDGET_BYTES = 256 << 20  # the (query chunk x training rows) similarity block


def _normalised(x: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float32, device=device)
    if not torch.isfinite(t).all():
        raise InvalidInputError("kNN features contain NaN or infinite values")
    return torch.nn.functional.normalize(t, dim=1)


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
    if not 1 <= k <= n:
        raise InvalidInputError(f"--k {k}: choose 1 to {n} (the number of training rows)")
    if temperature <= 0:
        raise InvalidInputError(f"the kNN temperature must be positive, got {temperature}")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    T = _normalised(train, dev)
    Y = torch.as_tensor(np.asarray(targets, dtype=np.float32), device=dev)
    if Y.ndim != 2 or Y.shape[0] != n:
        raise InvalidInputError(f"kNN targets must be (train rows, outputs) = ({n}, K), got {tuple(Y.shape)}")
    Q = _normalised(query, dev)
    chunk = max(1, budget_bytes // (4 * n))
    out = torch.empty((len(Q), Y.shape[1]), dtype=torch.float64, device=dev)
    for start in range(0, len(Q), chunk):
        sims = Q[start : start + chunk] @ T.T  # (chunk, n)
        top, idx = sims.topk(k, dim=1)
        weights = torch.exp((top.double() - top.double().amax(dim=1, keepdim=True)) / temperature)  # stable
        votes = torch.einsum("qk,qkc->qc", weights, Y[idx].double())
        out[start : start + chunk] = votes / weights.sum(dim=1, keepdim=True)
    return out.cpu().numpy()
