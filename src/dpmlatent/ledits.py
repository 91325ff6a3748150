"""diffusers' edit-friendly inversion (``LEditsPPPipelineStableDiffusion.invert``) as a reference
for :func:`dpmlatent.encoder.edit_friendly_encode`.

LEdits++ (Brack et al., CVPR 2024) inverts real images into the edit-friendly DDPM noise space of
Huberman-Spiegelglas, Kulikov & Michaeli: every ``x_t`` drawn independently from ``q(x_t | x0)``
(one draw per timestep, smallest ``t`` first), then the noises that make the sampler's steps pass
through those states. This module builds that pipeline from any Stable Diffusion pipeline's parts
and reads its stored inversion as our :class:`~dpmlatent.latent.LatentCode`, so that both encoders
can be compared number for number (``tests/test_edit.py``, ``benchmarks/ledits_parity.py``).

What ``invert`` does in diffusers 0.42.1, and the two things this module has to work around:

* it keeps a ``DDIMScheduler`` (others are replaced), sets ``timestep_spacing="leading"``, eta = 1,
  and with ``skip`` runs ``int(n (1 + skip))`` timesteps of which it inverts the last ``n`` (our
  ``strength``); it encodes the image with the VAE's *mode* times ``scaling_factor`` (no draw);
* it passes ``scheduler.add_noise`` a *float* timestep, with which ``DDIMScheduler`` cannot index its
  ``alphas_cumprod`` (an ``IndexError``): :func:`ledits_pipeline` wraps ``add_noise`` to cast it to an
  integer, which changes no number;
* it unpacks ``encode_prompt``'s outputs in the wrong order when ``source_guidance_scale <= 1`` (a
  crash), and with a non-empty ``source_prompt`` it guides with the roles of the two prompts swapped;
  :func:`ledits_code` therefore inverts under the empty prompt (where no guidance is applied) and
  passes ``source_guidance_scale=1.5`` only to take the branch that unpacks correctly;
* it switches the UNet to the classic attention processor and does not restore it, which moves later
  outputs by about 1e-6: :func:`ledits_pipeline` works on deep copies of the parts.

With the same generator, :func:`dpmlatent.encoder.edit_friendly_encode` gives the same ``x_T`` as
``invert`` bit for bit, and the same noises to float32 rounding (about 1e-7 relative; bit for bit for
one image on a pipeline built in memory). The draws, ``x0``, the prompt states and the formula
(``compute_noise_ddim``) agree exactly; what differs is the UNet's output: captured inside ``invert``,
it is about 1e-6 away from the same UNet called after ``invert`` on the same inputs (same attention
processor). We have not found why.
"""

from __future__ import annotations

import copy

import torch

from .latent import LatentCode

__all__ = ["ledits_pipeline", "ledits_code"]


def ledits_pipeline(pipe):
    """A ``LEditsPPPipelineStableDiffusion`` on deep copies of ``pipe``'s VAE, text encoder,
    tokenizer, UNet and scheduler (``pipe`` is left untouched), without a safety checker, with
    ``add_noise`` patched to take the integer timestep (see the module docstring)."""
    from diffusers import DDIMScheduler, LEditsPPPipelineStableDiffusion

    if not isinstance(getattr(pipe, "scheduler", None), DDIMScheduler):
        raise TypeError(f"pipe must be a Stable Diffusion pipeline with a DDIMScheduler, got "
                        f"{type(getattr(pipe, 'scheduler', pipe)).__name__}")
    parts = copy.deepcopy({k: getattr(pipe, k) for k in ("vae", "text_encoder", "tokenizer", "unet", "scheduler")})
    peer = LEditsPPPipelineStableDiffusion(**parts, safety_checker=None, feature_extractor=None,
                                           requires_safety_checker=False)
    peer.set_progress_bar_config(disable=True)
    add_noise = peer.scheduler.add_noise
    peer.scheduler.add_noise = lambda x, noise, t: add_noise(x, noise, t.long())
    return peer


@torch.no_grad()
def ledits_code(peer, image, *, num_inference_steps: int, generator: torch.Generator | None = None):
    """Invert ``image`` with ``peer.invert`` (a :func:`ledits_pipeline`) under the empty prompt, every
    one of ``num_inference_steps`` steps (``skip=0``), and return what it stored, in our terms.

    Args:
        image: what ``invert`` takes (a ``(B, 3, H, W)`` tensor in ``[0, 1]``, PIL images, ...), ``H``
            and ``W`` multiples of 32.
        num_inference_steps: >= 1. generator: for its ``x_t`` draws.

    Returns:
        ``(z, x0, empty, scheduler)``: the code (``x_start = x_T``, noises in step order, largest ``t``
        first) that ``decode(peer.unet, scheduler, z, eta=1, cond=empty)`` maps to ``x0``, the VAE
        latents ``(B, 4, H/8, W/8)`` it inverted, the empty prompt's token states ``(B, L, D)`` and
        the ``DDIMScheduler`` with the config ``invert`` left (leading spacing), timesteps set.
    """
    from diffusers import DDIMScheduler

    if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be a positive integer, got {num_inference_steps!r}")
    peer.invert(image=image, source_prompt="", source_guidance_scale=1.5, num_inversion_steps=num_inference_steps,
                skip=0.0, generator=generator)
    x0, _ = peer.encode_image(image, dtype=peer.text_encoder.dtype)
    scheduler = DDIMScheduler.from_config(peer.scheduler.config)
    scheduler.set_timesteps(num_inference_steps)
    # what invert conditioned on: encode_prompt's first output, the *editing* branch's states of "" (see above)
    empty = peer.encode_prompt(device=x0.device, num_images_per_prompt=1, enable_edit_guidance=True,
                               editing_prompt="")[0]                    # (B, L, D): invert set the batch size
    z = LatentCode(peer.init_latents.clone(), peer.zs.clone(), scheduler.timesteps.clone(), num_inference_steps)
    return z, x0, empty, scheduler
