"""The Gaussian latent space of a stochastic diffusion sampler (Wu & De la Torre, Sec. 3).

A sampler that injects fresh noise at every step,

    x_{t_{i+1}} = mu_theta(x_{t_i}, t_i) + sigma_{t_i} * eps_i,      eps_i ~ N(0, I),

is a deterministic map ``G`` from ``z = (x_start, eps_1, ..., eps_S)`` to an image. Here
``mu_theta`` and ``sigma_t`` are exactly what the diffusers scheduler's own ``step()``
computes (DDIM with ``eta``, or DDPM), so every scheduler option (prediction type,
clipping, thresholding, timestep spacing, offsets) is honoured.

* :class:`LatentCode` — the code ``z`` with its timesteps; ``flatten()``/``unflatten()``.
* :func:`sample_latent` — ``z ~ N(0, I)``.
* :func:`decode` — ``G(z)``.
* :func:`denoiser_output` and :func:`step_with_noise` — the per-step pieces that the
  encoder (:mod:`dpmlatent.encoder`) shares with the decoder.
"""

from __future__ import annotations

import contextlib
import dataclasses
from unittest import mock

import torch
import torch.utils.checkpoint
from diffusers import DDIMScheduler, DDPMScheduler
from diffusers.schedulers import scheduling_ddpm
from diffusers.utils.torch_utils import randn_tensor
from tqdm.auto import tqdm

__all__ = ["LatentCode", "SUPPORTED_SCHEDULERS", "check_scheduler", "without_clipping", "unclipped_copy",
           "sampling_timesteps", "sample_latent", "decode", "denoiser_output", "step_with_noise", "slerp"]

SUPPORTED_SCHEDULERS = (DDIMScheduler, DDPMScheduler)


@dataclasses.dataclass
class LatentCode:
    """A latent code ``z`` of a stochastic sampler.

    Attributes:
        x_start: ``(B, C, H, W)`` — ``x_T``, or ``x_{t0}`` for partial encoding (strength < 1).
        noises: ``(S, B, C, H, W)`` — ``eps`` injected by each of the ``S`` steps, in order.
        timesteps: ``(S,)`` int64 — the timestep each step starts from (descending).
        num_inference_steps: the scheduler's ``set_timesteps`` argument (``S`` equals it at
            strength 1, fewer at strength < 1).
    """

    x_start: torch.Tensor
    noises: torch.Tensor
    timesteps: torch.Tensor
    num_inference_steps: int

    def __post_init__(self):
        if self.noises.ndim != self.x_start.ndim + 1 or self.noises.shape[1:] != self.x_start.shape:
            raise ValueError(f"noises must have shape (S, *x_start.shape) = (S, {tuple(self.x_start.shape)}), "
                             f"got {tuple(self.noises.shape)}")
        if len(self.timesteps) != len(self.noises):
            raise ValueError(f"one timestep per noise: got {len(self.timesteps)} timesteps and "
                             f"{len(self.noises)} noises")

    @property
    def batch_size(self) -> int:
        return self.x_start.shape[0]

    @property
    def dim(self) -> int:
        """Dimension of one sample's flattened code, ``(S + 1) * C * H * W``."""
        return self.x_start[0].numel() * (len(self.noises) + 1)

    def flatten(self) -> torch.Tensor:
        """One Gaussian vector per sample: ``(B, dim)`` = ``[x_start, eps_1, ..., eps_S]``."""
        b = self.batch_size
        parts = [self.x_start.reshape(b, -1)] + [n.reshape(b, -1) for n in self.noises]
        return torch.cat(parts, dim=1)

    def unflatten(self, flat: torch.Tensor) -> "LatentCode":
        """The inverse of :meth:`flatten`: a code with this one's shapes and timesteps."""
        if flat.ndim != 2 or flat.shape[1] != self.dim:
            raise ValueError(f"flat must have shape (B, {self.dim}), got {tuple(flat.shape)}")
        chunks = flat.reshape(flat.shape[0], len(self.noises) + 1, *self.x_start.shape[1:])
        return LatentCode(chunks[:, 0], chunks[:, 1:].transpose(0, 1), self.timesteps,
                          self.num_inference_steps)

    def to(self, *args, **kwargs) -> "LatentCode":
        return LatentCode(self.x_start.to(*args, **kwargs), self.noises.to(*args, **kwargs),
                          self.timesteps, self.num_inference_steps)

    def __getitem__(self, index) -> "LatentCode":
        """Select samples of the batch (``z[2]``, ``z[:4]``)."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return LatentCode(self.x_start[index], self.noises[:, index], self.timesteps,
                          self.num_inference_steps)


def check_scheduler(scheduler, eta: float) -> None:
    """Raise unless ``scheduler`` is supported and ``eta`` fits it."""
    if not isinstance(scheduler, SUPPORTED_SCHEDULERS):
        raise TypeError(f"scheduler must be a DDIMScheduler or DDPMScheduler, got {type(scheduler).__name__}; "
                        "convert with DDIMScheduler.from_config(scheduler.config)")
    if isinstance(scheduler, DDPMScheduler) and eta != 1.0:
        raise ValueError(f"DDPMScheduler is the eta=1 sampler; got eta={eta}. Use a DDIMScheduler "
                         "for other values of eta")
    if isinstance(scheduler, DDPMScheduler) and scheduler.config.variance_type not in ("fixed_small", "fixed_small_log", "fixed_large"):
        raise ValueError(f"DDPMScheduler variance_type {scheduler.config.variance_type!r} is not supported "
                         "(fixed_small, fixed_small_log, fixed_large are)")
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1], got {eta}")


def without_clipping(scheduler):
    """The same scheduler with clipping and thresholding of the predicted ``x0`` switched off
    (``scheduler`` itself when it does neither), with the same timesteps: for reading a step's
    slopes off the scheduler (DPM-Encoder's mismatch gain and last-step solve, Asyrp's step weights),
    which clipping would bend."""
    if not (scheduler.config.get("clip_sample", False) or scheduler.config.get("thresholding", False)):
        return scheduler
    twin = type(scheduler).from_config(scheduler.config, clip_sample=False, thresholding=False)
    twin.set_timesteps(scheduler.num_inference_steps)
    return twin


def unclipped_copy(scheduler, num_inference_steps: int):
    """A new scheduler of ``scheduler``'s type and config with clipping and thresholding off and
    ``num_inference_steps`` set, always a copy (unlike :func:`without_clipping`), so that setting its
    timesteps leaves the caller's scheduler as it was: for training losses that read the unclipped
    predicted ``x0`` (through clipping, every saturated pixel's gradient is zero)."""
    twin = type(scheduler).from_config(scheduler.config, clip_sample=False, thresholding=False)
    sampling_timesteps(twin, num_inference_steps)
    return twin


def sampling_timesteps(scheduler, num_inference_steps: int, strength: float = 1.0) -> torch.Tensor:
    """The timesteps a sampler of ``strength`` runs: the last ``int(n * strength)`` of
    ``scheduler.set_timesteps(n)`` (as diffusers' img2img pipelines do)."""
    if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be a positive integer, got {num_inference_steps!r}")
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength must be in (0, 1], got {strength}")
    scheduler.set_timesteps(num_inference_steps)
    n_run = min(int(num_inference_steps * strength), num_inference_steps)
    if n_run < 1:
        raise ValueError(f"strength={strength} with {num_inference_steps} steps runs no step; "
                         f"use strength >= {1 / num_inference_steps:.3g}")
    return scheduler.timesteps[num_inference_steps - n_run:].clone()


def sample_latent(shape, scheduler, num_inference_steps: int, eta: float, strength: float = 1.0,
                  generator: torch.Generator | None = None, *, device=None,
                  dtype: torch.dtype = torch.float32) -> LatentCode:
    """Draw ``z ~ N(0, I)`` for a sampler of ``num_inference_steps`` steps at ``strength``.

    ``x_start`` is drawn first, then the noises in step order (``randn_tensor``, so a CPU
    generator gives the same code on every device).

    Args:
        shape: ``(B, C, H, W)`` of the images.
        scheduler: a ``DDIMScheduler`` or ``DDPMScheduler`` (its timesteps are used).
        num_inference_steps: >= 1. eta: in [0, 1] (checked against the scheduler).
        strength: in (0, 1]. generator: optional ``torch.Generator``.
    """
    check_scheduler(scheduler, eta)
    timesteps = sampling_timesteps(scheduler, num_inference_steps, strength)
    x_start = randn_tensor(tuple(shape), generator=generator, device=device, dtype=dtype)
    noises = randn_tensor((len(timesteps), *shape), generator=generator, device=device, dtype=dtype)
    return LatentCode(x_start, noises, timesteps, num_inference_steps)


def denoiser_output(unet, x: torch.Tensor, t, *, cond=None, uncond=None,
                    guidance_scale: float = 1.0) -> torch.Tensor:
    """The UNet's output at ``(x, t)``, with classifier-free guidance when asked.

    ``out = u + s * (c - u)`` with ``c = unet(x, t, cond)`` and ``u = unet(x, t, uncond)``
    (Ho & Salimans 2021). ``cond``/``uncond`` are ``encoder_hidden_states`` ``(B, L, D)`` of a
    ``UNet2DConditionModel``; leave them None for an unconditional ``UNet2DModel``.
    """
    if cond is None:
        if guidance_scale != 1.0 or uncond is not None:
            raise ValueError("guidance_scale != 1 and uncond need a conditional model (cond=...)")
        return unet(x, t).sample
    if guidance_scale == 1.0:
        return unet(x, t, encoder_hidden_states=cond).sample
    if uncond is None:
        raise ValueError(f"guidance_scale={guidance_scale} needs uncond (the empty-prompt embedding)")
    both = unet(torch.cat([x, x]), t, encoder_hidden_states=torch.cat([uncond, cond])).sample
    u, c = both.chunk(2)
    return u + guidance_scale * (c - u)


@contextlib.contextmanager
def _ddpm_noise(noise: torch.Tensor):
    """Make ``DDPMScheduler.step`` inject ``noise`` instead of drawing it (its ``randn_tensor``)."""
    with mock.patch.object(scheduling_ddpm, "randn_tensor", lambda *a, **k: noise):
        yield


def step_with_noise(scheduler, model_output: torch.Tensor, t, x: torch.Tensor,
                    noise: torch.Tensor, eta: float) -> torch.Tensor:
    """One sampler step with the injected noise given: ``mu_theta(x, t) + sigma_t * noise``.

    DDIM: ``scheduler.step(..., eta=eta, variance_noise=noise)``. DDPM (which has no
    ``variance_noise`` argument): its own ``step`` with ``noise`` in place of its random draw.
    """
    if isinstance(scheduler, DDIMScheduler):
        if eta == 0.0:
            return scheduler.step(model_output, t, x, eta=0.0).prev_sample
        return scheduler.step(model_output, t, x, eta=eta, variance_noise=noise).prev_sample
    with _ddpm_noise(noise):
        return scheduler.step(model_output, t, x).prev_sample


def _check_unet_input(unet, x: torch.Tensor, name: str) -> None:
    channels = unet.config.in_channels
    if x.ndim != 4 or x.shape[1] != channels:
        raise ValueError(f"{name} must have shape (B, {channels}, H, W) for this UNet "
                         f"(in_channels={channels}), got {tuple(x.shape)}")


def decode(unet, scheduler, z: LatentCode, *, eta: float, cond=None, uncond=None,
           guidance_scale: float = 1.0, callback=None, checkpoint: bool = False,
           progress: bool = False) -> torch.Tensor:
    """``G(z)``: run the sampler from ``z.x_start`` injecting ``z.noises``.

    For each step ``i``: ``x <- step_with_noise(scheduler, eps_theta(x, t_i), t_i, x, z.noises[i], eta)``.
    Deterministic: the same ``z`` gives the same image. Differentiable with respect to
    ``z`` and the UNet (wrap in ``torch.no_grad()`` for plain sampling).

    Args:
        unet: ``UNet2DModel`` (``cond=None``) or ``UNet2DConditionModel``.
        scheduler: ``DDIMScheduler`` (any ``eta`` in [0, 1]; 0 = deterministic DDIM, the
            noises are then ignored) or ``DDPMScheduler`` (``eta=1``). Its timesteps are reset.
        z: the latent code (:func:`sample_latent`, :func:`dpmlatent.encoder.dpm_encode`).
        cond, uncond, guidance_scale: see :func:`denoiser_output`.
        callback: optional ``callback(i, t, x)`` called after step ``i`` with the new ``x``
            (to record trajectories).
        checkpoint: when gradients are recorded, wrap each step in ``torch.utils.checkpoint``:
            the backward pass recomputes a step's activations instead of storing them, so memory
            stays flat in the number of steps (about 1.6x the time; the gradients are the same).
        progress: tqdm bar over the steps.

    Returns:
        ``(B, C, H, W)`` images on ``z``'s device and dtype.
    """
    check_scheduler(scheduler, eta)
    _check_unet_input(unet, z.x_start, "z.x_start")
    timesteps = sampling_timesteps(scheduler, z.num_inference_steps)
    if not torch.equal(timesteps[len(timesteps) - len(z.timesteps):].cpu(), z.timesteps.cpu()):
        raise ValueError("z.timesteps do not match this scheduler's timesteps for "
                         f"num_inference_steps={z.num_inference_steps}: was z made with another scheduler?")
    x = z.x_start
    steps = list(zip(z.timesteps, z.noises))

    def step(x, t, noise):
        out = denoiser_output(unet, scheduler.scale_model_input(x, t), t, cond=cond, uncond=uncond,
                              guidance_scale=guidance_scale)
        return step_with_noise(scheduler, out, t, x, noise, eta)

    recompute = checkpoint and torch.is_grad_enabled()
    for i, (t, noise) in enumerate(tqdm(steps, desc="decode", disable=not progress)):
        if recompute:
            x = torch.utils.checkpoint.checkpoint(step, x, t, noise, use_reentrant=False)
        else:
            x = step(x, t, noise)
        if callback is not None:
            callback(i, t, x)
    return x


def slerp(a: torch.Tensor, b: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between flattened Gaussian codes.

    ``slerp(a, b, w) = sin((1-w) th) / sin(th) * a + sin(w th) / sin(th) * b`` with
    ``th = angle(a, b)``, so the norm stays near ``sqrt(dim)`` like a Gaussian sample's
    (a straight line through the middle would shrink it by about ``1/sqrt(2)``).

    Args:
        a, b: ``(D,)`` flattened codes (``LatentCode.flatten()[i]``).
        weights: ``(K,)`` interpolation weights in [0, 1].

    Returns:
        ``(K, D)`` codes.
    """
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"a and b must be 1-D of equal size, got {tuple(a.shape)} and {tuple(b.shape)}")
    cos = torch.dot(a, b) / (a.norm() * b.norm())
    theta = torch.arccos(cos.clamp(-1.0, 1.0))
    w = weights.to(a.dtype).unsqueeze(1)  # (K, 1)
    if theta.abs() < 1e-6:
        return (1 - w) * a + w * b
    return (torch.sin((1 - w) * theta) * a + torch.sin(w * theta) * b) / torch.sin(theta)
