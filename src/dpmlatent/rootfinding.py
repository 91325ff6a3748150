"""Solve ``f(x) = y`` image by image: the nonlinear equation behind an exact DPM-Encoder.

Where a sampler's last step is deterministic, DPM-Encoder needs the ``x`` whose step lands on the
real image: ``mu_theta(x, t) = x0`` (see :mod:`dpmlatent.encoder`). :func:`solve_per_image` finds
it in two stages:

1. the **plain iteration** ``x <- x + (y - f(x)) / g``, with ``g`` the step's own gain on ``x``
   at a fixed network output. It converges in a few evaluations when the network's share of the
   step's Jacobian is small (a last step from ``t = 0``, the usual case);
2. where it does not (a trained denoiser from ``t = 49``: its Jacobian has singular values down
   to ~1e-3, and the plain iteration's map has eigenvalues above 1), **Newton's method**
   ``x <- x + dx`` with ``J dx = y - f(x)`` solved in the least-squares sense. ``J`` is the
   *generalised* Jacobian of the real step: where clipping is active a pixel's row is zero, and
   the minimum-norm step leaves that pixel's equation to the others (semismooth Newton). For
   images of up to ``dense_max`` numbers ``J`` is formed column by column from forward-mode
   Jacobian-vector products and solved exactly; above that, by GMRES from the same products
   (Newton–Krylov: nothing of size ``D x D`` is formed).

``f`` must treat the images of a batch independently (a UNet in eval mode does), so each image
is solved and stopped on its own. Everything runs on ``x``'s device and dtype, except the small
least-squares problems (``D x D`` at most ``dense_max``, or the Krylov basis), solved on the
CPU in float64.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

__all__ = ["solve_per_image", "gmres", "jvp", "jacobian"]


def jvp(fn: Callable, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``J_fn(x) v`` by forward-mode autodiff (``torch.func.jvp``).

    The math kernel of scaled-dot-product attention is used inside, because the fused CPU
    kernels have no forward-mode derivative; the value is the same to rounding."""
    with sdpa_kernel(SDPBackend.MATH):
        return torch.func.jvp(fn, (x,), (v,))[1]


def jacobian(fn: Callable, x: torch.Tensor, idx: torch.Tensor, *, chunk: int = 4096) -> torch.Tensor:
    """The Jacobian of ``fn(., idx)`` at each image of ``x``: ``(B, D, D)``, ``J[b, i, j] = d f_i / d x_j``.

    Images do not interact, so column ``j`` of every image's Jacobian comes from one JVP of a
    batch holding ``D`` copies of each image with tangents ``e_j``; ``chunk`` bounds the batch."""
    b, d = len(x), x[0].numel()
    cols = []
    basis = torch.eye(d, dtype=x.dtype, device=x.device).reshape(d, *x.shape[1:])
    per = max(1, chunk // d)                                                  # images per JVP call
    for lo in range(0, b, per):
        xs, ids = x[lo:lo + per], idx[lo:lo + per]
        n = len(xs)
        big = xs.repeat_interleave(d, 0)
        tangents = basis.repeat(n, *([1] * (x.ndim - 1)))
        out = jvp(lambda z: fn(z, ids.repeat_interleave(d)), big, tangents)  # (n*d, ...): column j
        cols.append(out.reshape(n, d, d).transpose(1, 2))
    return torch.cat(cols)


def _small_lstsq(h: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """``argmin_y |h y - rhs|`` (minimum norm) per row: ``h (B, m, n)``, ``rhs (B, m)`` -> ``(B, n)``,
    CPU float64."""
    return torch.linalg.lstsq(h, rhs.unsqueeze(-1), driver="gelsd").solution.squeeze(-1)


def gmres(matvec: Callable, b: torch.Tensor, *, iters: int, rtol: float = 1e-7) -> torch.Tensor:
    """GMRES for ``A_i x_i = b_i``, one independent system per row of ``b`` ``(B, D)``.

    ``matvec`` maps ``(B, D) -> (B, D)`` row by row (``A_i`` applied to row ``i``). Arnoldi with
    Gram-Schmidt done twice (float32 loses orthogonality otherwise); stops at ``iters`` basis
    vectors or when every row's relative residual is below ``rtol``.

    Returns:
        ``x`` ``(B, D)`` minimising ``|A_i x_i - b_i|`` over the Krylov space of each row.
    """
    if not isinstance(iters, int) or iters < 1:
        raise ValueError(f"iters must be a positive integer, got {iters!r}")
    beta = b.norm(dim=1)                                                     # (B,)
    tiny = torch.finfo(b.dtype).tiny
    basis = [b / beta.clamp_min(tiny)[:, None]]
    h = torch.zeros(len(b), iters + 1, iters, dtype=torch.float64)
    rhs = torch.zeros(len(b), iters + 1, dtype=torch.float64)
    rhs[:, 0] = beta.double().cpu()
    for j in range(min(iters, b.shape[1])):
        w = matvec(basis[j])
        for _ in range(2):
            for i, v in enumerate(basis):
                c = (w * v).sum(1)
                h[:, i, j] += c.double().cpu()
                w = w - c[:, None] * v
        norm = w.norm(dim=1)
        h[:, j + 1, j] = norm.double().cpu()
        basis.append(w / norm.clamp_min(tiny)[:, None])
        y = _small_lstsq(h[:, :j + 2, :j + 1], rhs[:, :j + 2])
        resid = (h[:, :j + 2, :j + 1] @ y.unsqueeze(-1)).squeeze(-1) - rhs[:, :j + 2]
        if (resid.norm(dim=1) <= rtol * rhs[:, 0].clamp_min(1e-300)).all():
            break
    v = torch.stack(basis[:y.shape[1]], -1)                                  # (B, D, m)
    return (v @ y.to(b.device, b.dtype).unsqueeze(-1)).squeeze(-1)


def _errors(fn, y, x, idx) -> tuple[torch.Tensor, torch.Tensor]:
    """The residual ``y - f(x)`` of the images ``idx`` and its max-norm per image."""
    r = y[idx] - fn(x, idx)
    return r, r.flatten(1).abs().amax(1)


def _record(x, err, idx, best, best_err) -> None:
    """Keep ``x`` as the best iterate of the images ``idx`` where ``err`` beats theirs."""
    better = err < best_err[idx]
    best[idx[better]], best_err[idx[better]] = x[better], err[better]


def _plain(fn, y, x, gain, idx, best, best_err, *, max_iter: int, tol: float, patience: int = 3):
    """``x <- x + (y - f(x)) / gain`` on the images ``idx``; records into ``best``/``best_err``."""
    own_err, stalled = torch.full((len(x),), float("inf"), device=x.device, dtype=x.dtype), 0
    for _ in range(max_iter):
        r, err = _errors(fn, y, x, idx)
        _record(x, err, idx, best, best_err)
        stalled = 0 if (err < own_err).any() else stalled + 1
        own_err = torch.minimum(err, own_err)
        if (own_err <= tol).all() or stalled >= patience:
            return
        x = x + r / gain[idx]


def _newton_step(fn, x, r, idx, *, dense_max: int, krylov: int) -> torch.Tensor:
    """The least-squares Newton step ``dx`` with ``J dx ~ r`` for the images ``idx``."""
    flat_r = r.reshape(len(r), -1)
    if flat_r.shape[1] <= dense_max:
        j = jacobian(fn, x, idx).double().cpu()
        dx = _small_lstsq(j, flat_r.double().cpu()).to(x.device, x.dtype)
    else:
        matvec = lambda v: jvp(lambda z: fn(z, idx), x, v.reshape(x.shape)).reshape(len(v), -1)  # noqa: E731
        dx = gmres(matvec, flat_r, iters=min(krylov, flat_r.shape[1]))
    return dx.reshape(x.shape)


def _newton(fn, y, x, idx, best, best_err, *, max_iter: int, tol: float, dense_max: int, krylov: int,
            patience: int = 4):
    """Newton from ``x`` (the images ``idx``), full steps (a backtracking search on the residual
    stalled at a miss of ~1e-2 on the shipped digit model, and Levenberg–Marquardt stopped in local
    minima of ``|y - f(x)|^2`` for most images, where full steps converge in about 7 iterations).
    The best iterate per image is what counts, and an image leaves the batch once it has converged
    or stopped improving for ``patience`` iterations."""
    stalled = torch.zeros(len(idx), dtype=torch.long, device=x.device)
    own = torch.full((len(idx),), float("inf"), device=x.device, dtype=x.dtype)  # Newton's own best
    for _ in range(max_iter):
        r, err = _errors(fn, y, x, idx)
        _record(x, err, idx, best, best_err)
        stalled, own = torch.where(err < own, 0, stalled + 1), torch.minimum(err, own)
        active = (best_err[idx] > tol) & (stalled < patience)
        if not active.any():
            return
        x, r, idx, stalled, own = x[active], r[active], idx[active], stalled[active], own[active]
        x = x + _newton_step(fn, x, r, idx, dense_max=dense_max, krylov=krylov)


def solve_per_image(fn: Callable, y: torch.Tensor, starts, *, gain: torch.Tensor,
                    tol: float | None = None, plain_iter: int = 50, newton_iter: int = 30,
                    dense_max: int = 1024, krylov: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Find ``x`` with ``f(x) = y`` for each image.

    From each start in turn (only for the images not solved yet): the plain iteration, then, where
    it has not converged, Newton from the same start (not from the plain iteration's best: where
    that iteration stalls it drifts to points from which Newton wanders). Newton converges from a
    good start and may stall from a poor one, so further starts are a cheap insurance.

    Args:
        fn: ``fn(x, idx)`` -> ``f`` of the images ``idx`` (a LongTensor into the batch), given
            their current values ``x`` ``(len(idx), C, H, W)``; images must not interact, and
            ``fn`` must support forward-mode autodiff (for Newton).
        y: ``(B, C, H, W)`` the targets.
        starts: a ``(B, C, H, W)`` tensor or a sequence of them, tried in order.
        gain: broadcastable to ``(B, C, H, W)``: the diagonal gain of ``f`` on ``x`` for the plain
            iteration (non-zero).
        tol: an image is solved once ``max |y - f(x)| <= tol`` (default ``8 * eps`` of the dtype).
        plain_iter, newton_iter: iteration budgets of the two stages (>= 0).
        dense_max: the largest image size ``C*H*W`` whose Jacobian is formed densely.
        krylov: the GMRES basis size above ``dense_max``.

    Returns:
        ``(x, err)``: the best ``x`` found per image ``(B, C, H, W)`` and ``max |y - f(x)|`` ``(B,)``.
        The caller decides whether ``err`` is small enough.
    """
    starts = [starts] if isinstance(starts, torch.Tensor) else list(starts)
    if y.ndim != 4 or not starts or any(s.shape != y.shape for s in starts):
        raise ValueError(f"starts must be tensors shaped like y (B, C, H, W) = {tuple(y.shape)}")
    for name, value in dict(plain_iter=plain_iter, newton_iter=newton_iter, dense_max=dense_max).items():
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    if not isinstance(krylov, int) or krylov < 1:
        raise ValueError(f"krylov must be a positive integer, got {krylov!r}")
    tol = 8 * torch.finfo(y.dtype).eps if tol is None else tol
    gain = torch.broadcast_to(gain, y.shape)
    best = starts[0].clone()
    best_err = torch.full((len(y),), float("inf"), device=y.device, dtype=y.dtype)
    for start in starts:
        todo = torch.nonzero(best_err > tol).flatten()
        if not len(todo):
            break
        _plain(fn, y, start[todo], gain, todo, best, best_err, max_iter=max(plain_iter, 1), tol=tol)
        todo = todo[best_err[todo] > tol]
        if len(todo) and newton_iter:
            _newton(fn, y, start[todo], todo, best, best_err, max_iter=newton_iter, tol=tol,
                    dense_max=dense_max, krylov=krylov)
    return best, best_err
