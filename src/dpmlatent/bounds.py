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
"""

from __future__ import annotations

import dataclasses

import torch

from .latent import LatentCode, check_scheduler, denoiser_output, sampling_timesteps, step_with_noise

__all__ = ["PathDistances", "trajectory_bound", "eps_coefficient"]


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
