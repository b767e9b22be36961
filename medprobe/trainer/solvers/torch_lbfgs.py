"""Batched L2 logistic regression in torch: many probes solved as one problem with L-BFGS.

Every probe minimises scikit-learn's objective on its own standardised training rows::

    C * sum_i w_i * loss_i(W, b) + 0.5 * ||W||^2          (intercept b unpenalised)

divided by ``n_train`` (same minimiser, gradients of order one). ``loss`` is the logistic loss
(binary), the softmax cross-entropy (multiclass) or the sum of per-finding logistic losses
(multilabel, independent sigmoids). Probes are laid out as layers (G) x columns (M); all of them
iterate together, a probe stops when ``max|grad| <= tol``, and each iteration evaluates only the
unconverged probes, one matrix product per layer for all of that layer's probes.

Standardisation never materialises per-probe copies of X: each layer is centred and scaled once
(numerics only), and each probe's own training-row statistics are folded into its weights on the fly.
The line search is a batched backtracking search (Armijo with quadratic interpolation, plus the
approximate-Wolfe acceptance of Hager and Zhang for steps below float32 rounding); the objective is
strongly convex, so every curvature pair has ``s'y > 0`` and the L-BFGS update is always valid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from medprobe.trainer.solvers.base import (
    FittedProbe,
    ProbeBatch,
    ProbeKind,
    balanced_weights,
    check_batch,
    encode_targets,
)


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class BatchedResult:
    """Raw solver output, indexed [layer, column]."""

    coef: torch.Tensor  # (G, M, K, d) standardised units
    intercept: torch.Tensor  # (G, M, K)
    mean: torch.Tensor  # (G, F, d) raw-feature means of each row set
    scale: torch.Tensor  # (G, F, d)
    n_iter: torch.Tensor  # (G, M)
    converged: torch.Tensor  # (G, M) bool
    grad_max: torch.Tensor  # (G, M)


class _Objective:
    """Function and gradient of the probes' scaled objectives, evaluated for any subset of probes."""

    def __init__(
        self,
        X: torch.Tensor,  # (G, n, d) centred/scaled per layer
        T: torch.Tensor,  # (n, K)
        weights: torch.Tensor,  # (F, n, Kw): row set membership x class weights
        counts: torch.Tensor,  # (F,)
        mu: torch.Tensor,  # (G, F, d) per-row-set mean of X
        sc: torch.Tensor,  # (G, F, d) per-row-set scale of X
        row_set_of: torch.Tensor,  # (M,)
        C: torch.Tensor,  # (G, M)
        kind: ProbeKind,
    ) -> None:
        self.X, self.T, self.weights, self.counts = X, T, weights, counts
        self.mu, self.sc, self.row_set_of, self.C, self.kind = mu, sc, row_set_of, C, kind
        self.G, self.n, self.d = X.shape
        self.K = T.shape[1]
        self.M = row_set_of.shape[0]

    @property
    def dim(self) -> int:
        return self.K * self.d + self.K

    def __call__(self, probes: torch.Tensor, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Objective values (a,) and gradients (a, D) of ``probes`` (flat indices g*M+m) at ``theta``."""
        f = torch.empty(probes.shape[0], dtype=theta.dtype, device=theta.device)
        grad = torch.empty_like(theta)
        g_of = torch.div(probes, self.M, rounding_mode="floor")
        for g in torch.unique(g_of).tolist():
            sel = torch.nonzero(g_of == g).squeeze(1)
            fv, gv = self._layer(g, probes[sel] - g * self.M, theta[sel])
            f[sel] = fv
            grad[sel] = gv
        return f, grad

    def _layer(self, g: int, cols: torch.Tensor, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, K, d, n = theta.shape[0], self.K, self.d, self.n
        W = theta[:, : K * d].view(a, K, d)
        b = theta[:, K * d :]
        rs = self.row_set_of[cols]
        mu, sc = self.mu[g, rs], self.sc[g, rs]  # (a, d)
        V = W / sc[:, None, :]
        off = b - (V * mu[:, None, :]).sum(-1)  # (a, K)
        Z = (self.X[g] @ V.reshape(a * K, d).T).view(n, a, K) + off[None]
        w = self.weights[rs].permute(1, 0, 2)  # (n, a, Kw)
        inv_n = 1.0 / self.counts[rs]  # (a,)
        T = self.T[:, None, :]
        if self.kind == "multiclass":
            lse = torch.logsumexp(Z, dim=2, keepdim=True)
            loss = (lse - Z).mul_(T).sum(2)  # (n, a): rows of T are one-hot
            R = torch.exp(Z - lse) - T
            data = (loss * w[:, :, 0]).sum(0)
        else:
            loss = torch.nn.functional.softplus(Z) - T * Z  # (n, a, K)
            R = torch.sigmoid(Z) - T
            data = (loss * w).sum((0, 2))
        R = R * (w * inv_n[None, :, None])
        GV = (R.reshape(n, a * K).T @ self.X[g]).view(a, K, d)
        rsum = R.sum(0)  # (a, K)
        GW = (GV - rsum[:, :, None] * mu[:, None, :]) / sc[:, None, :]
        lam = inv_n / self.C[g, cols]  # (a,)
        sq = (W * W).sum((1, 2))
        f = data * inv_n + 0.5 * lam * sq
        GW = GW + lam[:, None, None] * W
        return f, torch.cat([GW.reshape(a, K * d), rsum], dim=1)


def _two_loop(
    grad: torch.Tensor, S: torch.Tensor, Y: torch.Tensor, rho: torch.Tensor, gamma: torch.Tensor, order: list[int]
) -> torch.Tensor:
    """L-BFGS direction ``-H grad`` for a stack of probes; ``order`` lists history slots newest first."""
    q = grad.clone()
    alphas = []
    for j in order:
        alpha = rho[:, j] * (S[:, j] * q).sum(1)
        q -= alpha[:, None] * Y[:, j]
        alphas.append(alpha)
    r = q * torch.where(gamma > 0, gamma, torch.ones_like(gamma))[:, None]
    for j, alpha in zip(reversed(order), reversed(alphas), strict=True):
        beta = rho[:, j] * (Y[:, j] * r).sum(1)
        r += S[:, j] * (alpha - beta)[:, None]
    return -r


def lbfgs_batched(
    objective: _Objective,
    n_probes: int,
    *,
    tol: float,
    max_iter: int,
    history: int = 10,
    max_ls: int = 25,
    dtype: torch.dtype,
    device: torch.device,
    on_iteration=None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Minimise all probes together from zero; returns (theta, n_iter, converged, max|grad|)."""
    P, D, m = n_probes, objective.dim, history
    theta = torch.zeros(P, D, dtype=dtype, device=device)
    all_p = torch.arange(P, device=device)
    f, grad = objective(all_p, theta)
    S = torch.zeros(P, m, D, dtype=dtype, device=device)
    Yh = torch.zeros_like(S)
    rho = torch.zeros(P, m, dtype=dtype, device=device)
    gamma = torch.zeros(P, dtype=dtype, device=device)
    n_iter = torch.zeros(P, dtype=torch.long, device=device)
    gmax = grad.abs().amax(1)
    converged = gmax <= tol
    stopped = converged.clone()
    eps = torch.finfo(dtype).eps
    c1 = 1e-4
    ftol = 10 * eps
    patience = 10
    n_flat = torch.zeros(P, dtype=torch.long, device=device)
    for k in range(max_iter):
        A = torch.nonzero(~stopped).squeeze(1)
        if A.numel() == 0:
            break
        order = [(k - 1 - i) % m for i in range(min(k, m))]
        gA, fA, thA = grad[A], f[A], theta[A]
        d = _two_loop(gA, S[A], Yh[A], rho[A], gamma[A], order)
        gtd = (gA * d).sum(1)
        fresh = (gamma[A] <= 0) | ~(gtd < 0)
        if fresh.any():  # no usable history (first step, or a reset): steepest descent, short first step
            d[fresh] = -gA[fresh]
            gtd[fresh] = -(gA[fresh] ** 2).sum(1)
            rho[A[fresh]] = 0
            gamma[A[fresh]] = 0
        g1 = gA.abs().sum(1)
        t = torch.where(fresh, torch.clamp(1.0 / g1, max=1.0), torch.ones_like(fA))
        th_new, f_new, g_new = thA.clone(), fA.clone(), gA.clone()
        ok_any = torch.zeros(A.numel(), dtype=torch.bool, device=device)
        pend = torch.arange(A.numel(), device=device)
        for _ in range(max_ls):
            th_try = thA[pend] + t[pend, None] * d[pend]
            f_try, g_try = objective(A[pend], th_try)
            f0, slope = fA[pend], gtd[pend]
            armijo = f_try <= f0 + c1 * t[pend] * slope
            dtd = (g_try * d[pend]).sum(1)
            approx_wolfe = (f_try <= f0 + 8 * eps * f0.abs()) & (dtd >= 0.9 * slope) & (dtd <= -slope)
            ok = torch.isfinite(f_try) & (armijo | approx_wolfe)
            acc = pend[ok]
            th_new[acc], f_new[acc], g_new[acc] = th_try[ok], f_try[ok], g_try[ok]
            ok_any[acc] = True
            bad = pend[~ok]
            if bad.numel() == 0:
                break
            tb, fb, sb, f0b = t[bad], f_try[~ok], slope[~ok], f0[~ok]
            denom = 2.0 * (fb - f0b - sb * tb)
            t_int = -sb * tb * tb / denom
            t_int = torch.where(torch.isfinite(t_int) & (denom > 0), t_int, 0.5 * tb)
            t[bad] = torch.minimum(torch.maximum(t_int, 0.1 * tb), 0.5 * tb)
            pend = bad
        s_vec = th_new - thA
        y_vec = g_new - gA
        sy = (s_vec * y_vec).sum(1)
        yy = (y_vec * y_vec).sum(1)
        good = ok_any & (sy > eps * yy)
        slot = k % m
        Ag = A[good]
        S[Ag, slot] = s_vec[good]
        Yh[Ag, slot] = y_vec[good]
        rho[Ag, slot] = 1.0 / sy[good]
        gamma[Ag] = sy[good] / yy[good]
        rho[A[~good], slot] = 0
        theta[A], f[A], grad[A] = th_new, f_new, g_new
        n_iter[A] += 1
        gm = g_new.abs().amax(1)
        gmax[A] = gm
        # at the dtype's rounding floor f stops decreasing before max|g| reaches tol: accept a probe
        # whose gradient is within 100 x tol after `patience` iterations without a visible decrease
        flat = (fA - f_new) <= ftol * torch.maximum(torch.maximum(fA.abs(), f_new.abs()), torch.ones_like(fA))
        n_flat[A] = torch.where(flat, n_flat[A] + 1, torch.zeros_like(n_flat[A]))
        conv = (gm <= tol) | ((n_flat[A] >= patience) & (gm <= 100 * tol))
        converged[A] = conv
        stopped[A] = conv | ~ok_any
        if on_iteration is not None:
            on_iteration(int(conv.sum()), int((~ok_any & ~conv).sum()))
    return theta, n_iter, converged, gmax


def _prepare_layers(layers, device, dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack layers as (G, n, d) on the device, each centred and scaled by its own statistics."""
    xs, means, stds = [], [], []
    for X in layers:
        Xt = torch.as_tensor(np.asarray(X) if not isinstance(X, torch.Tensor) else X).to(device)
        X64 = Xt.to(torch.float64)
        mean = X64.mean(0)
        std = X64.std(0, correction=0)
        std = torch.where(std > 0, std, torch.ones_like(std))
        xs.append(((X64 - mean) / std).to(dtype))
        means.append(mean)
        stds.append(std)
        del X64
    return torch.stack(xs), torch.stack(means), torch.stack(stds)


def fit_torch_batched(
    layers: Sequence[np.ndarray | torch.Tensor],
    y: np.ndarray,
    kind: ProbeKind,
    n_classes: int,
    batch: ProbeBatch,
    *,
    class_weight: str | None = None,
    tol: float = 1e-6,
    max_iter: int = 1000,
    history: int = 10,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    on_iteration=None,
) -> BatchedResult:
    """Fit layers x columns probes in one batched solve (all layers must share rows and width)."""
    dev = torch.device(device) if device is not None else default_device()
    G = len(layers)
    n = int(layers[0].shape[0])
    if any(int(X.shape[0]) != n for X in layers) or any(X.shape[1] != layers[0].shape[1] for X in layers):
        raise ValueError("all layers of one batched solve must have the same rows and feature width")
    check_batch(batch, G, n)
    T_np = encode_targets(y, kind, n_classes)
    K = T_np.shape[1]
    F = len(batch.row_sets)
    masks = np.zeros((F, n))
    for i, rows in enumerate(batch.row_sets):
        masks[i, np.asarray(rows)] = 1.0
    if class_weight == "balanced":
        cw = np.stack([_balanced_on(T_np, masks[i] > 0, kind) for i in range(F)])
    elif class_weight is None:
        cw = np.ones((F, n, 1))
    else:
        raise ValueError(f"class_weight must be None or 'balanced', got {class_weight!r}")
    weights = torch.as_tensor(cw * masks[:, :, None], dtype=dtype, device=dev)
    counts = torch.as_tensor(masks.sum(1), dtype=dtype, device=dev)

    X, gmean, gstd = _prepare_layers(layers, dev, dtype)
    M64 = torch.as_tensor(masks, dtype=torch.float64, device=dev)
    mu_list, sc_list = [], []
    for g in range(G):
        X64 = X[g].to(torch.float64)
        mu = (M64 @ X64) / M64.sum(1, keepdim=True)
        var = ((M64 @ (X64 * X64)) / M64.sum(1, keepdim=True) - mu * mu).clamp_min(0)
        sc = var.sqrt()
        sc = torch.where(sc > 1e-6, sc, torch.ones_like(sc))
        mu_list.append(mu)
        sc_list.append(sc)
        del X64
    mu64, sc64 = torch.stack(mu_list), torch.stack(sc_list)  # (G, F, d)
    obj = _Objective(
        X,
        torch.as_tensor(T_np, dtype=dtype, device=dev),
        weights,
        counts,
        mu64.to(dtype),
        sc64.to(dtype),
        torch.as_tensor(np.asarray(batch.row_set_of), dtype=torch.long, device=dev),
        torch.as_tensor(np.asarray(batch.C, dtype=float), dtype=dtype, device=dev),
        kind,
    )
    M = len(batch.row_set_of)
    theta, n_iter, conv, gmax = lbfgs_batched(
        obj,
        G * M,
        tol=tol,
        max_iter=max_iter,
        history=history,
        dtype=dtype,
        device=dev,
        on_iteration=on_iteration,
    )
    d = X.shape[2]
    coef = theta[:, : K * d].reshape(G, M, K, d)
    intercept = theta[:, K * d :].reshape(G, M, K)
    raw_mean = gmean[:, None, :] + gstd[:, None, :] * mu64
    raw_scale = gstd[:, None, :] * sc64
    return BatchedResult(coef, intercept, raw_mean, raw_scale, n_iter.view(G, M), conv.view(G, M), gmax.view(G, M))


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
        tol: float = 1e-6,
        max_iter: int = 1000,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.tol, self.max_iter, self.dtype = tol, max_iter, dtype
        self.device = torch.device(device) if device is not None else default_device()

    def fit_many(
        self,
        layers: Sequence[np.ndarray],
        y: np.ndarray,
        kind: ProbeKind,
        n_classes: int,
        batch: ProbeBatch,
        *,
        class_weight: str | None = None,
        on_iteration=None,
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
        )
        coef = res.coef.double().cpu().numpy()
        icpt = res.intercept.double().cpu().numpy()
        mean, scale = res.mean.cpu().numpy(), res.scale.cpu().numpy()
        n_iter, conv, gmax = res.n_iter.cpu().numpy(), res.converged.cpu().numpy(), res.grad_max.cpu().numpy()
        out = []
        for g in range(len(layers)):
            row = []
            for m, rs in enumerate(np.asarray(batch.row_set_of)):
                row.append(
                    FittedProbe(
                        kind=kind,
                        coef=coef[g, m],
                        intercept=icpt[g, m],
                        mean=mean[g, rs],
                        scale=scale[g, rs],
                        C=float(batch.C[g, m]),
                        n_iter=int(n_iter[g, m]),
                        converged=bool(conv[g, m]),
                        extra={"grad_max": float(gmax[g, m])},
                    )
                )
            out.append(row)
        return out
