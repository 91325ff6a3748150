"""CycleDiffusion and its baselines: unpaired translation between related domains.

Wu & De la Torre, Sec. 4.1. With two diffusion models trained independently on related
domains (handwritten and typeset digits), the same latent code decodes to similar images.
CycleDiffusion encodes a source image with the source model (DPM-Encoder) and decodes the
code with the target model:  ``x_tgt = G_tgt(DPM-Encoder_src(x_src))``.

Baselines through the same interface:

* :func:`sdedit_translate` (Meng et al. 2022): noise ``x0`` to ``t0``, then denoise with the
  target model and *fresh* noise.
* :func:`ddib_translate` (Su et al. 2023): deterministic DDIM inversion with the source model,
  DDIM decoding with the target model.
"""

from __future__ import annotations

import torch
from diffusers.utils.torch_utils import randn_tensor

from .encoder import ddim_decode, ddim_invert, encoder_function
from .latent import LatentCode, check_scheduler, decode, sampling_timesteps

__all__ = ["schedule_differences", "check_same_schedule", "cycle_translate", "sdedit_translate",
           "ddib_translate"]

# Config keys that change the maths of the forward process or of a sampler step.
SCHEDULE_KEYS = ("num_train_timesteps", "beta_schedule", "beta_start", "beta_end", "trained_betas",
                 "prediction_type", "clip_sample", "clip_sample_range", "thresholding",
                 "timestep_spacing", "steps_offset", "set_alpha_to_one", "rescale_betas_zero_snr")


def schedule_differences(a, b) -> dict:
    """``{key: (a's value, b's value)}`` for the schedule settings in which two schedulers differ."""
    out = {}
    for key in SCHEDULE_KEYS:
        va, vb = a.config.get(key), b.config.get(key)
        if va != vb:
            out[key] = (va, vb)
    return out


def check_same_schedule(a, b) -> None:
    """Raise a ValueError naming every schedule setting in which ``a`` and ``b`` differ.

    Two models only share a latent space if they were trained with the same noise schedule
    and are sampled with the same timesteps.
    """
    diff = schedule_differences(a, b)
    if diff:
        listed = ", ".join(f"{k}: {va!r} vs {vb!r}" for k, (va, vb) in diff.items())
        raise ValueError(f"the source and target schedulers differ ({listed}); CycleDiffusion needs "
                         "models trained with the same noise schedule, sampled with the same settings")


def cycle_translate(src_unet, tgt_unet, scheduler, x0: torch.Tensor, *, eta: float = 0.1,
                    num_inference_steps: int, strength: float, generator: torch.Generator | None = None,
                    tgt_scheduler=None, encoder: str = "dpm") -> torch.Tensor:
    """CycleDiffusion: ``decode(tgt_unet, dpm_encode(src_unet, x0))`` (``encoder="dpm"``), or with the
    edit-friendly encoder (``encoder="edit-friendly"``, :func:`~dpmlatent.encoder.edit_friendly_encode`).

    Args:
        src_unet, tgt_unet: ``UNet2DModel`` s of the two domains (same schedule).
        scheduler: ``DDIMScheduler`` (or ``DDPMScheduler`` with eta = 1) used for both.
        x0: ``(B, C, H, W)`` source images in ``[-1, 1]``.
        eta: in (0, 1]; the paper uses 0.1. num_inference_steps: >= 1. strength: in (0, 1].
        generator: for the encoder's random trajectory.
        tgt_scheduler: the target model's own scheduler, if any: checked to have the same schedule.
        encoder: ``"dpm"`` or ``"edit-friendly"``.

    Returns:
        ``(B, C, H, W)`` translations.
    """
    encode = encoder_function(encoder)                 # raises for an unknown name
    if tgt_scheduler is not None:
        check_same_schedule(scheduler, tgt_scheduler)
    z = encode(src_unet, scheduler, x0, eta=eta, num_inference_steps=num_inference_steps, strength=strength,
               generator=generator)
    with torch.no_grad():
        return decode(tgt_unet, scheduler, z, eta=eta)


def sdedit_translate(tgt_unet, scheduler, x0: torch.Tensor, *, eta: float = 1.0, num_inference_steps: int,
                     strength: float, generator: torch.Generator | None = None, cond=None, uncond=None,
                     guidance_scale: float = 1.0) -> torch.Tensor:
    """SDEdit: ``x_{t0} ~ q(x_{t0} | x0)``, then the target sampler with fresh noise (eta = 1 by default).

    ``cond``, ``uncond``, ``guidance_scale``: the target prompt of a conditional model, as in
    :func:`dpmlatent.latent.decode` (used by :mod:`dpmlatent.edit`)."""
    check_scheduler(scheduler, eta)
    timesteps = sampling_timesteps(scheduler, num_inference_steps, strength)
    draw = lambda shape: randn_tensor(shape, generator=generator, device=x0.device, dtype=x0.dtype)  # noqa: E731
    x_t0 = scheduler.add_noise(x0, draw(x0.shape), timesteps[:1].repeat(len(x0)).to(x0.device))
    z = LatentCode(x_t0, draw((len(timesteps), *x0.shape)), timesteps, num_inference_steps)
    with torch.no_grad():
        return decode(tgt_unet, scheduler, z, eta=eta, cond=cond, uncond=uncond, guidance_scale=guidance_scale)


def ddib_translate(src_unet, tgt_unet, scheduler, x0: torch.Tensor, *, num_inference_steps: int,
                   strength: float = 1.0, tgt_scheduler=None) -> torch.Tensor:
    """DDIB: DDIM inversion with the source model, deterministic DDIM decoding with the target."""
    if tgt_scheduler is not None:
        check_same_schedule(scheduler, tgt_scheduler)
    z = ddim_invert(src_unet, scheduler, x0, num_inference_steps=num_inference_steps, strength=strength)
    with torch.no_grad():
        return ddim_decode(tgt_unet, scheduler, z)
