"""Batched L2 logistic regression in torch: many probes solved as one problem with L-BFGS.

Every probe minimises scikit-learn's objective on its own standardised training rows::

    C * sum_i w_i * loss_i(W, b) + 0.5 * ||W||^2          (intercept b unpenalised)

divided by ``n_train`` (same minimiser, gradients of order one). ``loss`` is the logistic loss
(binary), the softmax cross-entropy (multiclass) or the sum of per-finding logistic losses
(multilabel, independent sigmoids).

Layout: probes sit on a grid of *blocks* (one design matrix each) x *slots*; one iteration is two
batched matrix products over all blocks (``bmm``), so the Python cost per iteration does not grow with
the number of probes. Two kinds of blocks:

* **full** (rows >= features): one block per layer, the layer centred and scaled once; each probe's own
  training-row statistics are folded into its weights on the fly, so no per-probe copy of X exists;
* **row span** (a probe's training rows n_f < features d): the minimiser's weights lie in the span of the
  standardised training rows (the data gradient is ``R' Z`` and the ridge keeps the rest at zero), so the
  probe is solved exactly in an orthonormal basis of that span, ``W = w Q'`` with ``||W|| = ||w||``: one
  block per (layer, row set) of width ``n_f`` instead of ``d``. Layers of any width share one solve.

A probe stops when ``max|grad| <= tol`` (or, at the dtype's rounding floor, within 100 x tol after 10
iterations without a visible decrease); stopped probes cost nothing once their whole block is done
(blocks are compacted away). The line search is batched backtracking (Armijo with quadratic
interpolation, plus the approximate-Wolfe acceptance of Hager and Zhang for steps below rounding). Small CPU
problems are solved in float64 (iterations cost little more, and nothing stalls at float32's rounding
floor); large ones, and every problem on an accelerator, in float32.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from medprobe.trainer.solvers.base import (
    FittedProbe,
    OnIteration,
    ProbeBatch,
    ProbeKind,
    balanced_weights,
    check_batch,
    encode_targets,
)
from medprobe.trainer.solvers.lbfgs import Blocks, lbfgs_blocks

MAX_ROW_SPAN_BYTES = 2 << 30  # above this, row-span blocks would cost more memory than they save
SMALL_DESIGN_ELEMENTS = 4 << 20  # design tensors up to this many elements are solved in float64 on CPU
SESSION_CACHE_BYTES = 4 << 30  # a session keeps at most this much prepared data on the device


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device, design_elements: int = 0) -> torch.dtype:
    """float64 for small CPU problems (exact, no stalls at float32's rounding floor, iterations overhead-bound);
    float32 on accelerators and for large CPU problems, whose iterations are bound by the products with X."""
    if device.type == "cpu" and design_elements <= SMALL_DESIGN_ELEMENTS:
        return torch.float64
    return torch.float32


def default_tol(dtype: torch.dtype) -> float:
    """Stopping tolerance on max|grad| of the scaled objective.

    float64: 1e-7; weakly regularised probes on fewer rows than features have a very flat optimum, and at
    C = 1e3 this keeps test AUC within ~1e-3 of a tightly converged scikit-learn fit (1e-6: ~7e-3; 1e-8:
    ~4e-4 for 1.5x the iterations). float32: 1e-6, with acceptance up to 100 x tol (scikit-learn's default
    tol) once the objective stops decreasing at float32's rounding floor.
    """
    return 1e-7 if dtype == torch.float64 else 1e-6


@dataclass
class BatchedResult:
    """Raw solver output, indexed [layer, column]; features beyond a layer's width are padding."""

    coef: torch.Tensor  # (G, M, K, d_max) standardised units
    intercept: torch.Tensor  # (G, M, K)
    mean: torch.Tensor  # (G, F, d_max) raw-feature means of each row set
    scale: torch.Tensor  # (G, F, d_max)
    n_iter: torch.Tensor  # (G, M)
    converged: torch.Tensor  # (G, M) bool
    grad_max: torch.Tensor  # (G, M)
    widths: list[int]
    row_span: np.ndarray  # (G, M) bool: solved in the span of its training rows (fewer rows than features)


# full-width blocks (rows >= features) up to this wide get an eigendecomposition preconditioner. Narrow layers of
# pooled CNN features are the ill-conditioned ones (EfficientNet-Lite0's 16-channel block: correlation eigenvalues
# 1.5e-5 to 12; C = 1,000 took ~4,000 L-BFGS iterations, 35 preconditioned). Row-span blocks get none: there the
# weakly regularised probes are nearly separable and the start's curvature misleads (more iterations, not fewer).
PRECONDITION_MAX_WIDTH = 512


def _curvature(kind: ProbeKind, K: int) -> float:
    """The loss's curvature at the start (probabilities 1/K, or 1/2 per sigmoid)."""
    return (1.0 / K) * (1.0 - 1.0 / K) if kind == "multiclass" else 0.25


def _weighted_spectrum(Z: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (D,) and eigenvectors (D, D) of ``Z' diag(w) Z`` (float64): the data part of the objective's
    Hessian at the start, which standardised but correlated features make ill-conditioned."""
    Z64 = Z.to(torch.float64)
    e, V = torch.linalg.eigh((Z64 * w.to(torch.float64)[:, None]).T @ Z64)
    return e.clamp_min(0), V


def _row_weights(
    T_np: np.ndarray, batch: ProbeBatch, kind: ProbeKind, class_weight: str | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(F, n, Kw) row weights of each row set divided by its size, the sizes (F,) and the row masks (F, n)."""
    F, n = len(batch.row_sets), T_np.shape[0]
    masks = np.zeros((F, n))
    for i, rows in enumerate(batch.row_sets):
        masks[i, np.asarray(rows)] = 1.0
    if class_weight == "balanced":
        cw = np.stack([_balanced_on(T_np, masks[i] > 0, kind) for i in range(F)])
    elif class_weight is None:
        cw = np.ones((F, n, 1))
    else:
        raise ValueError(f"class_weight must be None or 'balanced', got {class_weight!r}")
    counts = masks.sum(1)
    return cw * masks[:, :, None] / counts[:, None, None], counts, masks


def _standardise_layer(
    X: np.ndarray | torch.Tensor, device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The layer in float64 on the device, centred and scaled by its own statistics (numerics only)."""
    Xt = torch.as_tensor(np.asarray(X) if not isinstance(X, torch.Tensor) else X).to(device, torch.float64)
    mean = Xt.mean(0)
    std = Xt.std(0, correction=0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return (Xt - mean) / std, mean, std


def _set_statistics(X64: torch.Tensor, M64: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row-set mean and scale (F, d) of a standardised layer; scale 1 for constant features."""
    cnt = M64.sum(1, keepdim=True)
    mu = (M64 @ X64) / cnt
    var = ((M64 @ (X64 * X64)) / cnt - mu * mu).clamp_min(0)
    sc = var.sqrt()
    return mu, torch.where(sc > 1e-6, sc, torch.ones_like(sc))


class PreparedCache:
    """What a solve derives from the data alone (each layer's standardisation, each row set's statistics and
    row-span basis), kept on the device between the solves of one session (the C values of a selection path) so
    each solve only iterates. Entries hold the caller's arrays so their ids stay theirs; at most ``max_bytes``."""

    def __init__(self, max_bytes: int = SESSION_CACHE_BYTES) -> None:
        self.entries: dict[tuple, tuple[object, tuple[torch.Tensor, ...]]] = {}
        self.max_bytes = max_bytes
        self.bytes = 0

    def get(self, key: tuple, source: object) -> tuple[torch.Tensor, ...] | None:
        hit = self.entries.get(key)
        return hit[1] if hit is not None and hit[0] is source else None

    def put(self, key: tuple, source: object, value: tuple[torch.Tensor, ...]) -> None:
        size = sum(t.numel() * t.element_size() for t in value)
        if key not in self.entries and self.bytes + size <= self.max_bytes:
            self.entries[key] = (source, value)
            self.bytes += size


def _digest(rows: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(rows, dtype=np.int64).tobytes(), digest_size=16).hexdigest()


@dataclass
class _Problem:
    """What both solve paths share: standardisation inputs, targets and row weights on the device."""

    layers: Sequence[np.ndarray | torch.Tensor]
    widths: list[int]
    kind: ProbeKind
    batch: ProbeBatch
    n: int  # rows in the solve
    K: int  # output columns
    counts: np.ndarray  # (F,) rows per row set
    span: list[list[int]]  # row-span width per (layer, row set)
    r_max: int
    rw: torch.Tensor  # (F, n, Kw) row weights / row-set size
    masks: torch.Tensor  # (F, n) float64 row-set masks
    T: torch.Tensor  # (n, K) targets
    dtype: torch.dtype
    device: torch.device
    tol: float
    max_iter: int
    history: int
    on_iteration: OnIteration | None
    precondition: bool = True
    sources: Sequence[object] = ()  # the caller's layer arrays (cache identity)
    layer_keys: Sequence[tuple] = ()  # per layer: (id of the caller's array, digest of the rows solved on)
    cache: PreparedCache | None = None
    set_digests: Sequence[str] = ()  # per row set (only with a cache)

    def set_key(self, gi: int, f: int) -> tuple:
        return (*self.layer_keys[gi], self.set_digests[f])

    def layer(self, gi: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Layer ``gi`` standardised (float64), its mean and std, and every row set's mean and scale (F, d) in
        standardised units; from the session cache when this layer and these row sets were seen."""
        F = len(self.batch.row_sets)
        cache, src = self.cache, self.sources[gi] if self.sources else None
        base = None if cache is None else cache.get(("layer", *self.layer_keys[gi]), src)
        if base is not None:
            X64, mean, std = base
        else:
            X64, mean, std = _standardise_layer(self.layers[gi], self.device)
            if cache is not None:
                cache.put(("layer", *self.layer_keys[gi]), src, (X64, mean, std))
        sets = [None if cache is None else cache.get(("set", *self.set_key(gi, f)), src) for f in range(F)]
        if all(s is not None for s in sets):
            mu = torch.stack([s[0] for s in sets if s is not None])
            sc = torch.stack([s[1] for s in sets if s is not None])
        else:
            mu, sc = _set_statistics(X64, self.masks)
            if cache is not None:
                for f in range(F):
                    cache.put(("set", *self.set_key(gi, f)), src, (mu[f], sc[f]))
        return X64, mean, std, mu, sc

    @property
    def rs_of(self) -> np.ndarray:
        return np.asarray(self.batch.row_set_of, dtype=int)

    @property
    def C(self) -> np.ndarray:
        return np.asarray(self.batch.C, dtype=float)

    def solve(
        self, blocks: Blocks, theta0: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return lbfgs_blocks(
            blocks, self.kind, tol=self.tol, max_iter=self.max_iter, history=self.history,
            on_iteration=self.on_iteration, theta0=theta0,
        )  # fmt: skip

    def start_of(
        self, gi: int, m: int, mean: torch.Tensor, scale: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Column ``m``'s warm start on layer ``gi`` in the solver's standardised units (W (K, d), c (K,)), given its
        row set's raw means and scales (d,); None when it starts from zero."""
        start = None if self.batch.start is None else self.batch.start[gi][m]
        if start is None:
            return None
        coef = torch.as_tensor(np.asarray(start[0], dtype=np.float64), device=self.device).reshape(self.K, -1)
        icpt = torch.as_tensor(np.asarray(start[1], dtype=np.float64), device=self.device).reshape(self.K)
        if coef.shape[1] != mean.shape[0]:
            raise ValueError(f"warm start for layer {gi}, column {m} has {coef.shape[1]} features, not {mean.shape[0]}")
        return coef * scale, icpt + (coef * mean).sum(1)


def _empty_result(p: _Problem) -> BatchedResult:
    G, F, M, d_max = len(p.layers), len(p.batch.row_sets), len(p.rs_of), max(p.widths)
    dev, dtype = p.device, p.dtype
    return BatchedResult(
        coef=torch.zeros(G, M, p.K, d_max, dtype=dtype, device=dev),
        intercept=torch.zeros(G, M, p.K, dtype=dtype, device=dev),
        mean=torch.zeros(G, F, d_max, dtype=torch.float64, device=dev),
        scale=torch.ones(G, F, d_max, dtype=torch.float64, device=dev),
        n_iter=torch.zeros(G, M, dtype=torch.long, device=dev),
        converged=torch.zeros(G, M, dtype=torch.bool, device=dev),
        grad_max=torch.zeros(G, M, dtype=dtype, device=dev),
        widths=p.widths,
        row_span=np.zeros((G, M), dtype=bool),
    )


def _solve_row_span(p: _Problem, out: BatchedResult) -> None:
    """One block per (layer, row set) holding only that set's rows, in the span of those rows when n_f < d."""
    G, F, dev, dtype, K, r_max = len(p.layers), len(p.batch.row_sets), p.device, p.dtype, p.K, p.r_max
    rs_of, C = p.rs_of, p.C
    cols_of = [np.flatnonzero(rs_of == f) for f in range(F)]
    Q = max(len(c) for c in cols_of)
    n_b = int(p.counts.max())  # a block holds only its row set's rows (zero-weight padding below)
    rows_of = [torch.as_tensor(np.asarray(r), device=dev) for r in p.batch.row_sets]
    X = torch.zeros(G * F, n_b, r_max, dtype=dtype, device=dev)
    bases: dict[tuple[int, int], torch.Tensor] = {}
    for gi in range(G):
        X64, mean, std, mu, sc = p.layer(gi)
        out.mean[gi, :, : p.widths[gi]] = mean + std * mu
        out.scale[gi, :, : p.widths[gi]] = std * sc
        for f in range(F):
            key = ("span", *p.set_key(gi, f), dtype) if p.cache is not None else ()
            hit = None if p.cache is None else p.cache.get(key, p.sources[gi])
            if hit is not None:
                Z, basis = hit[0], (hit[1] if hit[1].numel() else None)
            else:
                Z, basis = (X64[rows_of[f]] - mu[f]) / sc[f], None
                if p.span[gi][f] < p.widths[gi]:
                    basis = torch.linalg.qr(Z.T).Q  # (d, n_f): orthonormal, spans the training rows
                    Z = Z @ basis
                Z = Z.to(dtype)
                if p.cache is not None:
                    p.cache.put(key, p.sources[gi], (Z, basis if basis is not None else torch.empty(0)))
            if basis is not None:
                bases[(gi, f)] = basis
            X[gi * F + f, : Z.shape[0], : Z.shape[1]] = Z
        del X64
    slot_col = np.full((F, Q), -1)  # the column m of each (row set, slot); -1 = dead slot
    for f in range(F):
        slot_col[f, : len(cols_of[f])] = cols_of[f]
    alive = slot_col >= 0
    lam_np = np.where(alive[None], 1.0 / (C[:, np.maximum(slot_col, 0)] * p.counts[None, :, None]), 1.0)
    live = torch.as_tensor(np.tile(alive, (G, 1)), device=dev)  # block g * F + f
    rw_b = torch.zeros(F, n_b, p.rw.shape[2], dtype=dtype, device=dev)
    T_b = torch.zeros(F, n_b, K, dtype=dtype, device=dev)
    for f in range(F):
        rw_b[f, : len(rows_of[f])] = p.rw[f, rows_of[f]]
        T_b[f, : len(rows_of[f])] = p.T[rows_of[f]]
    w = (rw_b[:, :, None, :] * torch.as_tensor(alive, dtype=dtype, device=dev)[:, None, :, None]).repeat(G, 1, 1, 1)
    lam = torch.as_tensor(lam_np.reshape(G * F, Q), dtype=dtype, device=dev)
    blocks = Blocks(X, T_b.repeat(G, 1, 1), None, None, w, lam, live)
    theta0 = None
    if p.batch.start is not None:
        theta0 = torch.zeros(G * F, Q, K * r_max + K, dtype=dtype, device=dev)
        for gi in range(G):
            for f in range(F):
                for q, m in enumerate(cols_of[f]):
                    w0 = p.start_of(gi, int(m), out.mean[gi, f, : p.widths[gi]], out.scale[gi, f, : p.widths[gi]])
                    if w0 is None:
                        continue
                    W0, c0 = w0
                    basis = bases.get((gi, f))
                    W0 = W0 if basis is None else W0 @ basis  # the part in the row span (all of a same-rows start)
                    theta0[gi * F + f, q, : K * r_max].view(K, r_max)[:, : W0.shape[1]] = W0.to(dtype)
                    theta0[gi * F + f, q, K * r_max :] = c0.to(dtype)
    theta, it, cv, gm = p.solve(blocks, theta0)
    del blocks, X, w
    for gi in range(G):
        for f in range(F):
            bi, r, q = gi * F + f, p.span[gi][f], len(cols_of[f])
            cols = torch.as_tensor(cols_of[f], device=dev)
            Wr = theta[bi, :q, : K * r_max].reshape(q, K, r_max)[..., :r]
            basis = bases.get((gi, f))
            out.row_span[gi, cols_of[f]] = basis is not None
            out.coef[gi, cols, :, : p.widths[gi]] = Wr if basis is None else Wr @ basis.T.to(dtype)
            out.intercept[gi, cols] = theta[bi, :q, K * r_max :]
            out.n_iter[gi, cols], out.converged[gi, cols], out.grad_max[gi, cols] = it[bi, :q], cv[bi, :q], gm[bi, :q]


def _row_set_spectra(
    p: _Problem, gi: int, X64: torch.Tensor, mu: torch.Tensor, sc: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every row set's weighted covariance spectrum on layer ``gi`` in its own standardisation: eigenvalues (F, d)
    and eigenvectors (F, d, d); from the session cache when seen."""
    weights = p.rw.mean(2)  # (F, n): zero outside each row set
    spectra = []
    for f in range(len(p.batch.row_sets)):
        key = ("spectrum", *p.set_key(gi, f)) if p.cache is not None else ()
        hit = None if p.cache is None else p.cache.get(key, p.sources[gi])
        if hit is None:
            hit = _weighted_spectrum((X64 - mu[f]) / sc[f], weights[f])
            if p.cache is not None:
                p.cache.put(key, p.sources[gi], hit)
        spectra.append(hit)
    return torch.stack([s[0] for s in spectra]), torch.stack([s[1] for s in spectra])


def _solve_by_width(p: _Problem, out: BatchedResult) -> None:
    """One block per layer over all rows (per-probe statistics folded into the weights); layers of one width
    share a solve."""
    dev, dtype, K, n = p.device, p.dtype, p.K, p.n
    rs_of, C = p.rs_of, p.C
    M = len(rs_of)
    by_width: dict[int, list[int]] = {}
    for gi, width in enumerate(p.widths):
        by_width.setdefault(width, []).append(gi)
    rs_t = torch.as_tensor(rs_of, device=dev)
    for width, members in by_width.items():
        Gw = len(members)
        lam = torch.as_tensor(1.0 / (C[members] * p.counts[rs_of][None, :]), dtype=dtype, device=dev)
        precondition = p.precondition and width <= PRECONDITION_MAX_WIDTH
        alpha = _curvature(p.kind, K)
        X = torch.empty(Gw, n, width, dtype=dtype, device=dev)  # filled in place: one copy of the data
        mus, scs, Vs, invs = [], [], [], []
        for i, gi in enumerate(members):
            X64, mean, std, mu, sc = p.layer(gi)
            out.mean[gi, :, :width] = mean + std * mu
            out.scale[gi, :, :width] = std * sc
            X[i] = X64
            mus.append(mu[rs_t].to(dtype))
            scs.append(sc[rs_t].to(dtype))
            if precondition:
                e, V = _row_set_spectra(p, gi, X64, mu, sc)
                Vs.append(V[rs_t].to(dtype))  # (M, d, d): each column's row set
                invs.append((1.0 / (alpha * e[rs_t] + lam[i].to(torch.float64)[:, None])).to(dtype))
            del X64
        w = p.rw[rs_t].permute(1, 0, 2)[None].expand(Gw, n, M, p.rw.shape[2])
        live = torch.ones(Gw, M, dtype=torch.bool, device=dev)
        blocks = Blocks(X, p.T[None], torch.stack(mus), torch.stack(scs), w, lam, live)
        if precondition:
            blocks.pre_V, blocks.pre_s, blocks.inv_alpha = torch.stack(Vs), torch.stack(invs), 1.0 / alpha
        theta0 = None
        if p.batch.start is not None:
            theta0 = torch.zeros(Gw, M, K * width + K, dtype=dtype, device=dev)
            for i, gi in enumerate(members):
                for m in range(M):
                    rs = int(rs_of[m])
                    w0 = p.start_of(gi, m, out.mean[gi, rs, :width], out.scale[gi, rs, :width])
                    if w0 is not None:
                        theta0[i, m, : K * width], theta0[i, m, K * width :] = w0[0].reshape(-1), w0[1]
        theta, it, cv, gm = p.solve(blocks, theta0)
        del blocks, X
        idx = torch.as_tensor(members, device=dev)
        out.coef[idx, :, :, :width] = theta[..., : K * width].reshape(Gw, M, K, width)
        out.intercept[idx] = theta[..., K * width :]
        out.n_iter[idx], out.converged[idx], out.grad_max[idx] = it, cv, gm


def _only_used_rows(
    layers: Sequence[np.ndarray | torch.Tensor], y: np.ndarray, batch: ProbeBatch
) -> tuple[Sequence[np.ndarray | torch.Tensor], np.ndarray, ProbeBatch]:
    """Drop the rows no probe trains on (they never enter the solve); row sets renumbered to match."""
    n = int(layers[0].shape[0])
    used = np.unique(np.concatenate([np.asarray(r) for r in batch.row_sets]))
    if len(used) == n:
        return layers, y, batch
    pos = np.full(n, -1)
    pos[used] = np.arange(len(used))
    layers = [X[torch.as_tensor(used) if isinstance(X, torch.Tensor) else used] for X in layers]
    return (
        layers,
        np.asarray(y)[used],
        ProbeBatch([pos[np.asarray(r)] for r in batch.row_sets], batch.row_set_of, batch.C, batch.start),
    )


def fit_torch_batched(
    layers: Sequence[np.ndarray | torch.Tensor],
    y: np.ndarray,
    kind: ProbeKind,
    n_classes: int,
    batch: ProbeBatch,
    *,
    class_weight: str | None = None,
    tol: float | None = None,
    max_iter: int = 1000,
    history: int = 10,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    on_iteration: OnIteration | None = None,
    cache: PreparedCache | None = None,
    precondition: bool = True,
) -> BatchedResult:
    """Fit layers x columns probes in one batched solve (layers share rows; widths may differ). ``cache`` keeps
    the data-only preparation between solves of one session (see :meth:`TorchSolver.session`). ``precondition``:
    full-width blocks up to ``PRECONDITION_MAX_WIDTH`` features start L-BFGS from the inverse of the objective's
    Hessian at the start (same minimiser, far fewer iterations on correlated narrow layers).

    Row-span blocks (one per layer x row set, in the span of the set's rows) when the sets are narrower than the
    features and fit in memory; otherwise one block per layer over all rows.
    """
    dev = torch.device(device) if device is not None else default_device()
    G = len(layers)
    n = int(layers[0].shape[0])
    if any(int(X.shape[0]) != n for X in layers):
        raise ValueError("all layers of one batched solve must have the same rows")
    check_batch(batch, G, n)
    sources = list(layers)
    used = _digest(np.unique(np.concatenate([np.asarray(r) for r in batch.row_sets]))) if cache is not None else ""
    layer_keys = [(id(X), used) for X in sources]
    layers, y, batch = _only_used_rows(layers, y, batch)
    n = int(layers[0].shape[0])
    widths = [int(X.shape[1]) for X in layers]
    d_max = max(widths)
    T_np = encode_targets(y, kind, n_classes)
    rw_np, counts, masks = _row_weights(T_np, batch, kind, class_weight)
    F = len(batch.row_sets)
    span = [[min(w, int(counts[f])) for f in range(F)] for w in widths]  # row-span width per (layer, set)
    r_max = max(max(s) for s in span)
    itemsize = torch.finfo(dtype or torch.float32).bits // 8
    row_span = r_max < d_max and G * F * n * r_max * itemsize <= max(MAX_ROW_SPAN_BYTES, G * n * d_max * itemsize)
    if dtype is None:
        dtype = default_dtype(dev, (G * F * r_max if row_span else G * d_max) * n)
    problem = _Problem(
        layers=layers, widths=widths, kind=kind, batch=batch, n=n, K=T_np.shape[1], counts=counts, span=span,
        r_max=r_max, rw=torch.as_tensor(rw_np, dtype=dtype, device=dev),
        masks=torch.as_tensor(masks, dtype=torch.float64, device=dev), T=torch.as_tensor(T_np, dtype=dtype, device=dev),
        dtype=dtype, device=dev, tol=default_tol(dtype) if tol is None else tol, max_iter=max_iter, history=history,
        on_iteration=on_iteration, sources=sources, layer_keys=layer_keys, cache=cache, precondition=precondition,
        set_digests=[_digest(np.asarray(r)) for r in batch.row_sets] if cache is not None else [],
    )  # fmt: skip
    result = _empty_result(problem)
    if row_span:
        _solve_row_span(problem, result)
    else:
        _solve_by_width(problem, result)
    return result


def _balanced_on(T: np.ndarray, in_set: np.ndarray, kind: ProbeKind) -> np.ndarray:
    """Balanced class weights computed on the rows of one row set (zero elsewhere)."""
    out = np.zeros((T.shape[0], 1 if kind != "multilabel" else T.shape[1]))
    out[in_set] = balanced_weights(T[in_set], kind)
    return out


class TorchSolver:
    """The default solver: batched L-BFGS in torch on CUDA when present, else CPU."""

    name = "torch"

    def __init__(
        self,
        *,
        tol: float | None = None,
        max_iter: int = 1000,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        precondition: bool = True,
    ) -> None:
        self.tol, self.max_iter = tol, max_iter
        self.precondition = precondition
        self.device = torch.device(device) if device is not None else default_device()
        self.dtype = dtype  # None: chosen per problem by default_dtype
        self._cache: PreparedCache | None = None

    @contextmanager
    def session(self) -> Iterator[None]:
        """Within the block, solves on the same layer arrays and row sets reuse their standardisation and row-span
        bases (the protocol's C path solves the same folds once per C); released on exit."""
        outer = self._cache
        self._cache = outer or PreparedCache()
        try:
            yield
        finally:
            self._cache = outer

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
        res = fit_torch_batched(
            layers,
            y,
            kind,
            n_classes,
            batch,
            class_weight=class_weight,
            tol=self.tol,
            max_iter=self.max_iter,
            device=self.device,
            dtype=self.dtype,
            on_iteration=on_iteration,
            cache=self._cache,
            precondition=self.precondition,
        )
        coef = res.coef.double().cpu().numpy()
        icpt = res.intercept.double().cpu().numpy()
        mean, scale = res.mean.cpu().numpy(), res.scale.cpu().numpy()
        n_iter, conv, gmax = res.n_iter.cpu().numpy(), res.converged.cpu().numpy(), res.grad_max.cpu().numpy()
        out = []
        for g, width in enumerate(res.widths):
            row = []
            for m, rs in enumerate(np.asarray(batch.row_set_of)):
                row.append(
                    FittedProbe(
                        kind=kind,
                        coef=coef[g, m, :, :width],
                        intercept=icpt[g, m],
                        mean=mean[g, rs, :width],
                        scale=scale[g, rs, :width],
                        C=float(batch.C[g, m]),
                        n_iter=int(n_iter[g, m]),
                        converged=bool(conv[g, m]),
                        extra={"grad_max": float(gmax[g, m]), "row_span": bool(res.row_span[g, m])},
                    )
                )
            out.append(row)
        return out
