"""The ideal denoiser of a finite data set, or of that set smoothed: ``E[x0 | x_t]`` in closed form.

The prior is ``K`` images ``d_1..d_K`` with equal weight, each blurred by isotropic Gaussian noise
of standard deviation ``bandwidth`` (tau): ``x0 ~ (1/K) sum_k N(d_k, tau^2 I)`` (a kernel density
estimate; ``tau = 0`` is the finite set itself). The forward process
``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` gives, with ``s_t^2 = abar_t tau^2 + 1 - abar_t``,

    p(k | x_t) = softmax_k( -||x_t - sqrt(abar_t) d_k||^2 / (2 s_t^2) ),
    E[x0 | x_t, k] = d_k + (sqrt(abar_t) tau^2 / s_t^2) (x_t - sqrt(abar_t) d_k),
    E[x0 | x_t] = sum_k p(k | x_t) E[x0 | x_t, k].

A finite set (tau = 0) has a posterior that collapses onto one image as ``t -> 0``; any tau > 0
makes the prior continuous, and the posterior spread of ``x0`` then shrinks only like
``1 - abar_t``.

:class:`IdealDenoiser` wraps this as a UNet: ``model(x_t, t).sample`` is what a perfectly trained
network would output for this (empirical) prior, in the scheduler's ``prediction_type``
(:func:`dpmlatent.encoder.perfect_model_output` with ``x0 = E[x0 | x_t]``). Every function of
the package that takes a ``unet`` accepts it (``decode``, ``dpm_encode``, ...). With it, whatever
is left of a discrepancy is due to the sampler, not to the network: chapter 2 uses it to show
that DPM-Encoder's heavy-tailed noises are intrinsic to the discrete reverse process.

Shapes: ``data (K, C, H, W)``, inputs ``(B, C, H, W)``; the computation runs in float64 on the
data's device, and the output has the input's dtype and device.
"""

from __future__ import annotations

import math
import types

import torch
from diffusers.models.unets.unet_2d import UNet2DOutput

from .encoder import perfect_model_output

__all__ = ["IdealDenoiser"]


class IdealDenoiser(torch.nn.Module):
    """The Bayes-optimal denoiser of ``data`` (equal weights) under ``scheduler``'s noise schedule.

    Args:
        data: ``(K, C, H, W)`` images, K >= 1, finite.
        bandwidth: tau >= 0, the standard deviation of the Gaussian blur of each image (0: the
            finite set itself).
        scheduler: a diffusers scheduler with ``alphas_cumprod`` and ``config.prediction_type``
            (the one that will run the sampler; its schedule defines ``abar_t``).
        chunk: how many inputs to score against all ``K`` images at once (memory ``chunk * K``).

    Raises:
        ValueError / TypeError: bad shapes or a scheduler without ``alphas_cumprod``.
    """

    def __init__(self, data: torch.Tensor, scheduler, *, bandwidth: float = 0.0, chunk: int = 256):
        super().__init__()
        if not isinstance(data, torch.Tensor) or data.ndim != 4 or len(data) < 1:
            raise ValueError(f"data must be a (K, C, H, W) tensor with K >= 1, got "
                             f"{tuple(data.shape) if isinstance(data, torch.Tensor) else type(data).__name__}")
        if not torch.isfinite(data).all():
            raise ValueError("data must be finite")
        if not hasattr(scheduler, "alphas_cumprod"):
            raise TypeError(f"scheduler must have alphas_cumprod (a DDPM/DDIM-type scheduler), got {type(scheduler).__name__}")
        if not isinstance(bandwidth, (int, float)) or not math.isfinite(bandwidth) or bandwidth < 0:
            raise ValueError(f"bandwidth must be a finite number >= 0, got {bandwidth!r}")
        if not isinstance(chunk, int) or chunk < 1:
            raise ValueError(f"chunk must be a positive integer, got {chunk!r}")
        self.register_buffer("data", data.detach().to(torch.float64))
        self.scheduler, self.chunk, self.bandwidth = scheduler, chunk, float(bandwidth)
        _, c, h, w = data.shape
        # what the package reads off a UNet's config
        self.config = types.SimpleNamespace(in_channels=c, out_channels=c, sample_size=h)

    def _abar(self, t):
        abar = self.scheduler.alphas_cumprod.to(torch.float64)[int(t)]
        return abar, abar * self.bandwidth ** 2 + 1 - abar                     # abar_t, s_t^2

    def sample_prior(self, num: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """``num`` draws of ``x0`` from the prior, ``(num, C, H, W)`` float64 on the data's device
        (an image index uniformly, then the Gaussian blur)."""
        if not isinstance(num, int) or num < 1:
            raise ValueError(f"num must be a positive integer, got {num!r}")
        idx = torch.randint(len(self.data), (num,), generator=generator)
        noise = torch.randn((num, *self.data.shape[1:]), generator=generator, dtype=torch.float64)
        return self.data[idx.to(self.data.device)] + self.bandwidth * noise.to(self.data.device)

    def posterior(self, x_t: torch.Tensor, t) -> torch.Tensor:
        """``p(k | x_t)``, ``(B, K)`` in float64."""
        abar, s2 = self._abar(t)
        flat = self.data.flatten(1)                                          # (K, D)
        # -||x - sqrt(abar) d||^2 / (2 (1 - abar)) up to the k-independent ||x||^2 term, written
        # with a matmul (not cdist) so forward-mode AD (the last-step solver's jvp) works through it
        bias = -abar * flat.square().sum(1) / 2                             # (K,)
        out = []
        for x in x_t.to(self.data.device, torch.float64).flatten(1).split(self.chunk):
            logits = (abar.sqrt() * x @ flat.T + bias) / s2                  # (b, K)
            out.append(torch.softmax(logits, dim=1))
        return torch.cat(out)

    def posterior_mean(self, x_t: torch.Tensor, t) -> torch.Tensor:
        """``E[x0 | x_t]``, the shape of ``x_t``, in float64."""
        self._check(x_t)
        abar, s2 = self._abar(t)
        mix = (self.posterior(x_t, t) @ self.data.flatten(1)).view(len(x_t), *self.data.shape[1:])
        if self.bandwidth == 0:
            return mix
        shrink = abar * self.bandwidth ** 2 / s2                             # weight of x_t in E[x0 | x_t]
        return (1 - shrink) * mix + shrink / abar.sqrt() * x_t.to(self.data.device, torch.float64)

    def _check(self, x_t):
        if not isinstance(x_t, torch.Tensor) or x_t.ndim != 4 or tuple(x_t.shape[1:]) != tuple(self.data.shape[1:]):
            raise ValueError(f"sample must have shape (B, {', '.join(map(str, self.data.shape[1:]))}), got "
                             f"{tuple(x_t.shape) if isinstance(x_t, torch.Tensor) else type(x_t).__name__}")

    def forward(self, sample: torch.Tensor, timestep, *args, **kwargs) -> UNet2DOutput:
        """``UNet2DModel``-style call: ``.sample`` is the ideal output at ``(sample, timestep)``."""
        t = timestep.flatten()[0] if isinstance(timestep, torch.Tensor) and timestep.ndim > 0 else timestep
        x0 = self.posterior_mean(sample, t)
        x0 = x0.to(sample.device)
        out = perfect_model_output(self.scheduler, x0, sample.to(torch.float64), int(t))
        return UNet2DOutput(sample=out.to(sample.dtype))
