"""How far apart do two diffusion models take the same latent code? (Wu & De la Torre, Sec. 4.1)

Decode one code ``z`` with two models. Both trajectories start at the same ``x_start`` and
receive the same noise ``sigma_t * eps_t``, which cancels in their difference:

    Delta_{t-1} = x1_{t-1} - x2_{t-1} = mu1(x1_t, t) - mu2(x2_t, t)
                = [mu1(x1_t, t) - mu1(x2_t, t)] + [mu1(x2_t, t) - mu2(x2_t, t)].

With ``L_t`` a Lipschitz factor of ``mu1( . , t)`` between the two current states and
``d_t = ||mu1(x2_t, t) - mu2(x2_t, t)||`` the two models' disagreement at the same point,
``||Delta_{t-1}|| <= L_t ||Delta_t|| + d_t``; unrolled from ``Delta_start = 0``,

    ||G1(z) - G2(z)|| <= sum_t (prod_{s after t} L_s) d_t.

:func:`trajectory_bound` measures both sides along the actual path, with ``L_t`` estimated
by the secant ``||mu1(x1_t) - mu1(x2_t)|| / ||x1_t - x2_t||`` (so the bound holds step by
step by the triangle inequality; its slack shows how much the two terms cancel). For
DDIM without clipping, ``mu1 - mu2`` at one point equals ``b_t (eps1 - eps2)`` with the
coefficient ``b_t`` of :func:`eps_coefficient`.

Because the secant factors are measured on *both* trajectories, that bound holds by
construction: it is a decomposition of the distance into per-step disagreement and
amplification, not a prediction. :func:`predicted_bound` is a prediction that can fail: it runs
model 1's trajectory only, takes ``d_t = ||mu1(x1_t) - mu2(x1_t)||`` at model 1's states and
``L_t = ||d mu1 / dx||_2`` at those states (the local spectral norm of the step's Jacobian,
:func:`step_jacobian_norm`), and unrolls the same recursion. It never sees ``G2(z)``; where model 2's path
wanders into a region where the models disagree more, or ``mu1`` stretches more than its
Jacobian says, the prediction falls below the distance.
"""

from __future__ import annotations

import dataclasses

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from .latent import LatentCode, check_scheduler, denoiser_output, sampling_timesteps, step_with_noise

__all__ = ["PathDistances", "trajectory_bound", "eps_coefficient", "PathPrediction", "step_jacobian_norm",
           "predicted_bound"]


@dataclasses.dataclass
class PathDistances:
    """Per-step measurements along two trajectories of one code (``S`` steps, batch ``B``).

    Attributes:
        timesteps: ``(S,)``.
        distance: ``(S + 1, B)`` — ``||x1 - x2||`` before the first step and after each step.
        disagreement: ``(S, B)`` — ``d_t = ||mu1(x2_t) - mu2(x2_t)||``.
        lipschitz: ``(S, B)`` — secant ``L_t`` (0 where the two states coincide).
        bound: ``(S + 1, B)`` — the unrolled bound after each step (``bound >= distance``).
    """

    timesteps: torch.Tensor
    distance: torch.Tensor
    disagreement: torch.Tensor
    lipschitz: torch.Tensor
    bound: torch.Tensor


def _norm(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).norm(dim=1)


@torch.no_grad()
def trajectory_bound(unet1, unet2, scheduler, z: LatentCode, *, eta: float) -> PathDistances:
    """Decode ``z`` with both models and measure the distance and its bound at every step."""
    check_scheduler(scheduler, eta)
    sampling_timesteps(scheduler, z.num_inference_steps)
    x1 = x2 = z.x_start
    zero = torch.zeros_like(z.x_start)
    dist, dis, lip, bound = [_norm(x1 - x2)], [], [], [torch.zeros(z.batch_size, device=x1.device, dtype=x1.dtype)]
    for t, noise in zip(z.timesteps, z.noises):
        out1 = denoiser_output(unet1, scheduler.scale_model_input(x1, t), t)
        out2 = denoiser_output(unet2, scheduler.scale_model_input(x2, t), t)
        mu1_x1 = step_with_noise(scheduler, out1, t, x1, zero, eta)
        mu1_x2 = step_with_noise(scheduler, denoiser_output(unet1, scheduler.scale_model_input(x2, t), t),
                                 t, x2, zero, eta)
        mu2_x2 = step_with_noise(scheduler, out2, t, x2, zero, eta)
        gap = _norm(x1 - x2)
        lip.append(torch.where(gap > 0, _norm(mu1_x1 - mu1_x2) / gap.clamp_min(1e-30), torch.zeros_like(gap)))
        dis.append(_norm(mu1_x2 - mu2_x2))
        bound.append(lip[-1] * bound[-1] + dis[-1])
        x1 = step_with_noise(scheduler, out1, t, x1, noise, eta)
        x2 = step_with_noise(scheduler, out2, t, x2, noise, eta)
        dist.append(_norm(x1 - x2))
    return PathDistances(z.timesteps, torch.stack(dist), torch.stack(dis), torch.stack(lip), torch.stack(bound))


def eps_coefficient(scheduler, t, eta: float, like: torch.Tensor) -> float:
    """``b_t`` with ``mu(x, t) = a_t x + b_t eps_theta(x, t)`` for an epsilon-prediction DDIM step
    without clipping, read off the scheduler's step (``x = 0``, model output 1, no noise)."""
    zeros = torch.zeros_like(like)
    return step_with_noise(scheduler, torch.ones_like(like), t, zeros, zeros, eta).flatten()[0].item()


@dataclasses.dataclass
class PathPrediction:
    """A bound predicted from model 1's trajectory alone (``S`` steps, batch ``B``).

    Attributes:
        timesteps: ``(S,)``.
        disagreement: ``(S, B)`` — ``||mu1(x1_t) - mu2(x1_t)||`` at model 1's states.
        lipschitz: ``(S, B)`` — ``||d mu1 / dx||_2`` at model 1's states (:func:`step_jacobian_norm`).
        bound: ``(S + 1, B)`` — the unrolled prediction after each step (0 before the first).
    """

    timesteps: torch.Tensor
    disagreement: torch.Tensor
    lipschitz: torch.Tensor
    bound: torch.Tensor


def _check_affine(scheduler) -> None:
    cfg = scheduler.config
    if cfg.get("clip_sample", False) or cfg.get("thresholding", False):
        raise ValueError("predicted_bound needs a step that is linear in (x, model output): build the scheduler "
                         "with clip_sample=False and thresholding=False, e.g. "
                         "DDIMScheduler.from_config(s.config, clip_sample=False)")


def step_jacobian_norm(unet, scheduler, x: torch.Tensor, t, *, eta: float, iterations: int = 30,
                       generator: torch.Generator | None = None, exact_up_to: int = 256) -> torch.Tensor:
    """``||J||_2`` per sample, ``J = d mu(x, t) / dx`` of the noise-free sampler step.

    For a step without clipping, ``mu(x) = a_t x + b_t eps(x)`` (read off the scheduler: the step is
    linear in the sample and the model output), so ``J^T u = step(J_eps^T u, u)`` with ``J_eps^T u``
    from one backward pass. When a sample has at most ``exact_up_to`` entries (the book's 8x8 images
    have 64) the whole Jacobian is built from one backward pass per entry and its largest singular
    value is exact. Larger samples use ``iterations`` rounds of power iteration on ``J^T J`` (``J v``
    by the double-backward trick, with the math attention kernel), which approaches the norm from
    below and converges slowly when the top singular values are close.

    Args:
        x: ``(B, C, H, W)`` states; the result is ``(B,)`` on their device, in their dtype.
        iterations: >= 1 (power iteration only).
        exact_up_to: the largest ``C * H * W`` for the exact route.
    """
    _check_affine(scheduler)
    if not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be a positive integer, got {iterations!r}")
    zero = torch.zeros_like(x)
    dim = x[0].numel()

    def lin(model_part, sample_part):           # the step's linear map, without noise
        return step_with_noise(scheduler, model_part, t, sample_part, zero, eta)

    with torch.enable_grad(), sdpa_kernel(SDPBackend.MATH):   # the fused attention kernels have no double backward
        xg = x.detach().requires_grad_(True)
        e = denoiser_output(unet, scheduler.scale_model_input(xg, t), t)
        if dim <= exact_up_to:
            rows = []
            for k in range(dim):                 # row k of J, for every sample at once: J^T e_k
                basis = torch.zeros_like(x).flatten(1)
                basis[:, k] = 1
                basis = basis.view_as(x)
                rows.append(lin(torch.autograd.grad(e, xg, grad_outputs=basis, retain_graph=k < dim - 1)[0],
                                basis).flatten(1))
            jac = torch.stack(rows, 1)           # (B, dim, dim)
            return torch.linalg.matrix_norm(jac.double(), ord=2).to(x.dtype)
        w = torch.zeros_like(e, requires_grad=True)
        jt_w = torch.autograd.grad(e, xg, grad_outputs=w, create_graph=True)[0]   # J_eps^T w, linear in w
        v = torch.randn(x.shape, generator=generator, dtype=torch.float64).to(x)
        v = v / _norm(v).view(-1, *[1] * (x.ndim - 1))
        for _ in range(iterations):
            jv = lin(torch.autograd.grad(jt_w, w, grad_outputs=v, retain_graph=True)[0], v)
            jtjv = lin(torch.autograd.grad(e, xg, grad_outputs=jv, retain_graph=True)[0], jv)
            v = (jtjv / _norm(jtjv).clamp_min(1e-30).view(-1, *[1] * (x.ndim - 1))).detach()
        jv = lin(torch.autograd.grad(jt_w, w, grad_outputs=v, retain_graph=False)[0], v)
    return _norm(jv).detach()


def predicted_bound(unet1, unet2, scheduler, z: LatentCode, *, eta: float, iterations: int = 30,
                    lipschitz: torch.Tensor | None = None) -> PathPrediction:
    """Predict ``||G1(z) - G2(z)||`` from model 1's trajectory alone (see the module docstring).

    ``bound_{i+1} = L_i bound_i + d_i`` from ``bound_0 = 0``, with ``d_i`` the two models' step
    disagreement and ``L_i`` the step's Jacobian norm (:func:`step_jacobian_norm`), both at model 1's
    state ``x1_i``. Pass ``lipschitz`` (the ``.lipschitz`` of an earlier call with the same
    ``unet1``, ``z`` and ``eta``) to reuse the costly part when comparing several second models.

    Raises:
        ValueError: the scheduler clips or thresholds (the step must be affine), or ``lipschitz``
            has the wrong shape.
    """
    check_scheduler(scheduler, eta)
    _check_affine(scheduler)
    sampling_timesteps(scheduler, z.num_inference_steps)
    steps, batch = len(z.timesteps), z.batch_size
    if lipschitz is not None and tuple(lipschitz.shape) != (steps, batch):
        raise ValueError(f"lipschitz must have shape (steps, batch) = {(steps, batch)}, got {tuple(lipschitz.shape)}")
    x = z.x_start
    zero = torch.zeros_like(x)
    gen = torch.Generator().manual_seed(0)
    dis, lip, bound = [], [], [torch.zeros(batch, device=x.device, dtype=x.dtype)]
    for i, (t, noise) in enumerate(zip(z.timesteps, z.noises)):
        with torch.no_grad():
            out1 = denoiser_output(unet1, scheduler.scale_model_input(x, t), t)
            out2 = denoiser_output(unet2, scheduler.scale_model_input(x, t), t)
            dis.append(_norm(step_with_noise(scheduler, out1, t, x, zero, eta)
                             - step_with_noise(scheduler, out2, t, x, zero, eta)))
        lip.append(lipschitz[i].to(x) if lipschitz is not None else
                   step_jacobian_norm(unet1, scheduler, x, t, eta=eta, iterations=iterations, generator=gen))
        bound.append(lip[-1] * bound[-1] + dis[-1])
        with torch.no_grad():
            x = step_with_noise(scheduler, out1, t, x, noise, eta)
    return PathPrediction(z.timesteps, torch.stack(dis), torch.stack(lip), torch.stack(bound))
