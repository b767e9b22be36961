"""The batched L-BFGS of the torch solver: many L2 logistic-regression probes on a grid of blocks (one design matrix
each) x slots, every iteration two batched matrix products, with a batched backtracking line search and per-probe
stopping. ``torch_lbfgs`` builds the blocks from a problem and reads the solutions back."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from medprobe.trainer.solvers.base import OnIteration, ProbeKind


@dataclass
class Blocks:
    """Probes on a (blocks, slots) grid; dead slots have zero row weights and converge at once."""

    X: torch.Tensor  # (B, n, D) design matrices
    T: torch.Tensor  # (B or 1, n, K) targets of the design rows
    mu: torch.Tensor | None  # (B, Q, D) per-probe means folded into the weights (full blocks), else None
    sc: torch.Tensor | None  # (B, Q, D)
    w: torch.Tensor  # (B, n, Q, Kw) row weights / row-set size (0 outside the probe's rows)
    lam: torch.Tensor  # (B, Q) 1 / (C * row-set size)
    live: torch.Tensor  # (B, Q) bool: a real probe
    # optional L-BFGS preconditioner per probe: the inverse of (curvature x weighted covariance + lam), by its
    # eigenvectors (B, Q, D, D) and inverse eigenvalues (B, Q, D); the intercept is scaled by inv_alpha
    pre_V: torch.Tensor | None = None
    pre_s: torch.Tensor | None = None
    inv_alpha: float = 1.0

    def precondition(self, v: torch.Tensor) -> torch.Tensor:
        """``M^-1 v`` for gradient-shaped ``v`` (B, Q, K*D+K); the identity without a preconditioner."""
        if self.pre_V is None or self.pre_s is None:
            return v
        B, Q, _ = v.shape
        D = self.X.shape[2]
        K = self.T.shape[2]
        W = v[..., : K * D].reshape(B, Q, K, D)
        U = torch.matmul(W, self.pre_V) * self.pre_s[:, :, None, :]
        W = torch.matmul(U, self.pre_V.transpose(-1, -2))
        return torch.cat([W.reshape(B, Q, K * D), v[..., K * D :] * self.inv_alpha], dim=2)

    def take(self, keep: torch.Tensor) -> Blocks:
        def sel(t: torch.Tensor) -> torch.Tensor:
            return t.index_select(0, keep)

        def sel_optional(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else sel(t)

        T = self.T if self.T.shape[0] == 1 else sel(self.T)
        return Blocks(
            sel(self.X), T, sel_optional(self.mu), sel_optional(self.sc), sel(self.w), sel(self.lam), sel(self.live),
            sel_optional(self.pre_V), sel_optional(self.pre_s), self.inv_alpha,
        )  # fmt: skip


def evaluate(blk: Blocks, kind: ProbeKind, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Objective values (B, Q) and gradients (B, Q, K*D+K) of every probe on the grid at ``theta``."""
    B, Q, _ = theta.shape
    n, D = blk.X.shape[1], blk.X.shape[2]
    K = blk.T.shape[2]
    W = theta[..., : K * D].reshape(B, Q, K, D)
    c = theta[..., K * D :]
    if blk.mu is not None and blk.sc is not None:  # both set for full blocks
        V = W / blk.sc[:, :, None, :]
        off = c - (V * blk.mu[:, :, None, :]).sum(-1)
    else:
        V, off = W, c
    Z = torch.bmm(blk.X, V.reshape(B, Q * K, D).transpose(1, 2)).view(B, n, Q, K) + off[:, None]
    Tb = blk.T[:, :, None, :]
    if kind == "multiclass":
        lse = torch.logsumexp(Z, dim=3, keepdim=True)
        data = (((lse - Z) * Tb).sum(3) * blk.w[..., 0]).sum(1)  # rows of T are one-hot
        R = (torch.exp(Z - lse) - Tb) * blk.w
    else:
        data = ((torch.nn.functional.softplus(Z) - Tb * Z) * blk.w).sum((1, 3))
        R = (torch.sigmoid(Z) - Tb) * blk.w
    GW = torch.bmm(R.view(B, n, Q * K).transpose(1, 2), blk.X).view(B, Q, K, D)
    rsum = R.sum(1)  # (B, Q, K)
    if blk.mu is not None and blk.sc is not None:  # both set for full blocks
        GW = (GW - rsum[..., None] * blk.mu[:, :, None, :]) / blk.sc[:, :, None, :]
    f = data + 0.5 * blk.lam * (W * W).sum((2, 3))
    GW = GW + blk.lam[:, :, None, None] * W
    return f, torch.cat([GW.reshape(B, Q, K * D), rsum], dim=2)


def _two_loop(
    grad: torch.Tensor,
    S: torch.Tensor,
    Y: torch.Tensor,
    rho: torch.Tensor,
    gamma: torch.Tensor,
    order: list[int],
    h0: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """L-BFGS direction ``-H grad`` for a stack of probes (P, D); ``order`` lists history slots newest first and
    ``h0`` applies the initial inverse Hessian (before its scale ``gamma``)."""
    q = grad.clone()
    alphas = []
    for j in order:
        alpha = rho[:, j] * (S[:, j] * q).sum(1)
        q -= alpha[:, None] * Y[:, j]
        alphas.append(alpha)
    r = h0(q) * torch.where(gamma > 0, gamma, torch.ones_like(gamma))[:, None]
    for j, alpha in zip(reversed(order), reversed(alphas), strict=True):
        beta = rho[:, j] * (Y[:, j] * r).sum(1)
        r += S[:, j] * (alpha - beta)[:, None]
    return -r


def _direction(
    g: torch.Tensor,
    S: torch.Tensor,
    Yh: torch.Tensor,
    rho: torch.Tensor,
    gamma: torch.Tensor,
    live: torch.Tensor,
    order: list[int],
    precondition: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The L-BFGS search direction of every live probe (b, Q, Dp), its slope g.d (b, Q), the first step length
    (b, Q) and the curvature scale after resets (b, Q).

    A probe with no usable history (first step, or a direction that does not descend) takes steepest descent with
    a short first step, and its history is forgotten (``rho`` is zeroed in place).
    """
    b, Q, Dp = g.shape
    m = S.shape[2]
    P = b * Q
    eps = torch.finfo(g.dtype).eps
    gf, lv = g.reshape(P, Dp), live.reshape(P)
    gam = gamma.reshape(P)

    def h0(x: torch.Tensor) -> torch.Tensor:
        return x if precondition is None else precondition(x.view(b, Q, Dp)).reshape(P, Dp)

    d = _two_loop(gf, S.reshape(P, m, Dp), Yh.reshape(P, m, Dp), rho.reshape(P, m), gam, order, h0)
    gtd = (gf * d).sum(1)
    fresh = lv & ((gam <= 0) | ~(gtd < 0))
    if bool(fresh.any()):
        first = h0(gf)  # steepest descent in the preconditioner's metric
        d = torch.where(fresh[:, None], -first, d)
        gtd = torch.where(fresh, -(gf * first).sum(1), gtd)
        rho.view(P, m)[fresh] = 0
        gam = torch.where(fresh, torch.zeros_like(gam), gam)
    d = torch.where(lv[:, None], d, torch.zeros_like(d))
    gtd = torch.where(lv, gtd, torch.zeros_like(gtd))
    short = torch.clamp(1.0 / gf.abs().sum(1).clamp_min(eps), max=1.0)  # unscaled steepest descent: a short step
    t = torch.where(fresh & (precondition is None), short, torch.ones_like(gtd))
    t = torch.where(lv, t, torch.zeros_like(t))
    return d.view(b, Q, Dp), gtd.view(b, Q), t.view(b, Q), gam.view(b, Q)


def _line_search(
    blk: Blocks,
    kind: ProbeKind,
    theta: torch.Tensor,
    f: torch.Tensor,
    g: torch.Tensor,
    d: torch.Tensor,
    gtd: torch.Tensor,
    t: torch.Tensor,
    live: torch.Tensor,
    max_ls: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backtracking (quadratic interpolation) until Armijo or approximate Wolfe holds, for every live probe at once.

    Returns the new (theta, f, g) and which probes accepted a step; the others keep their point.
    """
    eps = torch.finfo(theta.dtype).eps
    c1 = 1e-4
    th_new, f_new, g_new = theta, f, g
    accepted = torch.zeros_like(live)
    pending = live.clone()
    for _ in range(max_ls):
        th_try = theta + t[..., None] * d
        f_try, g_try = evaluate(blk, kind, th_try)
        armijo = f_try <= f + c1 * t * gtd
        dtd = (g_try * d).sum(2)
        approx_wolfe = (f_try <= f + 8 * eps * f.abs()) & (dtd >= 0.9 * gtd) & (dtd <= -gtd)
        ok = pending & torch.isfinite(f_try) & (armijo | approx_wolfe)
        th_new = torch.where(ok[..., None], th_try, th_new)
        g_new = torch.where(ok[..., None], g_try, g_new)
        f_new = torch.where(ok, f_try, f_new)
        accepted |= ok
        pending &= ~ok
        if not bool(pending.any()):
            break
        denom = 2.0 * (f_try - f - gtd * t)
        t_int = -gtd * t * t / denom
        t_int = torch.where(torch.isfinite(t_int) & (denom > 0), t_int, 0.5 * t)
        t = torch.where(pending, torch.minimum(torch.maximum(t_int, 0.1 * t), 0.5 * t), t)
    return th_new, f_new, g_new, accepted


def lbfgs_blocks(
    blocks: Blocks,
    kind: ProbeKind,
    *,
    tol: float,
    max_iter: int,
    history: int = 10,
    max_ls: int = 25,
    on_iteration: OnIteration | None = None,
    theta0: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Minimise every probe on the grid from ``theta0`` (B, Q, K*D+K; default zero); returns (theta, n_iter,
    converged, max|grad|), each (B, Q, ...)."""
    B, Q = blocks.lam.shape
    K, D = blocks.T.shape[2], blocks.X.shape[2]
    Dp, m, dtype, dev = K * D + K, history, blocks.X.dtype, blocks.X.device
    eps = torch.finfo(dtype).eps
    ftol, patience = 10 * eps, 10
    out_theta = torch.zeros(B, Q, Dp, dtype=dtype, device=dev)
    out_iter = torch.zeros(B, Q, dtype=torch.long, device=dev)
    out_conv = torch.zeros(B, Q, dtype=torch.bool, device=dev)
    out_gmax = torch.zeros(B, Q, dtype=dtype, device=dev)

    ids = torch.arange(B, device=dev)  # working blocks -> original block index
    blk = blocks
    theta = torch.zeros(B, Q, Dp, dtype=dtype, device=dev) if theta0 is None else theta0.to(dev, dtype).clone()
    theta[~blk.live] = 0  # dead slots stay at zero (their row weights are zero)
    f, g = evaluate(blk, kind, theta)
    S = torch.zeros(B, Q, m, Dp, dtype=dtype, device=dev)
    Yh = torch.zeros_like(S)
    rho = torch.zeros(B, Q, m, dtype=dtype, device=dev)
    gamma = torch.zeros(B, Q, dtype=dtype, device=dev)
    n_iter = torch.zeros(B, Q, dtype=torch.long, device=dev)
    n_flat = torch.zeros(B, Q, dtype=torch.long, device=dev)
    gmax = g.abs().amax(2)
    conv = (gmax <= tol) | ~blk.live
    live = ~conv

    def flush(sel: torch.Tensor) -> None:
        out_theta[ids[sel]], out_iter[ids[sel]] = theta[sel], n_iter[sel]
        out_conv[ids[sel]], out_gmax[ids[sel]] = conv[sel], gmax[sel]

    for k in range(max_iter):
        busy = live.any(1)
        n_busy = int(busy.sum())
        if n_busy == 0:
            break
        if n_busy <= 0.75 * busy.numel():  # compact: finished blocks leave the working set
            flush(torch.nonzero(~busy).squeeze(1))
            keep = torch.nonzero(busy).squeeze(1)
            ids, blk = ids[keep], blk.take(keep)
            theta, f, g, S, Yh, rho, gamma = (t[keep] for t in (theta, f, g, S, Yh, rho, gamma))
            n_iter, n_flat, gmax, conv, live = (t[keep] for t in (n_iter, n_flat, gmax, conv, live))
        order = [(k - 1 - i) % m for i in range(min(k, m))]
        d, gtd, t, gam = _direction(g, S, Yh, rho, gamma, live, order, None if blk.pre_V is None else blk.precondition)
        th_new, f_new, g_new, accepted = _line_search(blk, kind, theta, f, g, d, gtd, t, live, max_ls)
        s_vec, y_vec = th_new - theta, g_new - g
        sy, yy = (s_vec * y_vec).sum(2), (y_vec * blk.precondition(y_vec)).sum(2)
        good = accepted & (sy > eps * yy)
        slot = k % m
        S[:, :, slot], Yh[:, :, slot] = s_vec, y_vec
        rho[:, :, slot] = torch.where(good, 1.0 / torch.where(good, sy, torch.ones_like(sy)), torch.zeros_like(sy))
        gamma = torch.where(good, sy / torch.where(good, yy, torch.ones_like(yy)), gam)
        flat = (f - f_new) <= ftol * torch.maximum(torch.maximum(f.abs(), f_new.abs()), torch.ones_like(f))
        theta, f, g = th_new, f_new, g_new
        n_iter += live.long()
        gm = g.abs().amax(2)
        gmax = torch.where(live, gm, gmax)
        n_flat = torch.where(live & flat, n_flat + 1, torch.zeros_like(n_flat))
        done = live & ((gm <= tol) | ((n_flat >= patience) & (gm <= 100 * tol)))
        stalled = live & ~accepted & ~done
        conv |= done
        live &= ~(done | stalled)
        if on_iteration is not None:
            on_iteration(int(done.sum()), int(stalled.sum()))
    flush(torch.arange(theta.shape[0], device=dev))
    return out_theta, out_iter, out_conv, out_gmax
