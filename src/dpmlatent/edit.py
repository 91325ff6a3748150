"""Zero-shot text-guided editing with CycleDiffusion (Wu & De la Torre, Sec. 4.2).

One text-to-image model, two prompts. DPM-Encoder encodes the image under the *source* prompt
(guidance scale ``s_src``), and the sampler decodes the same latent code under the *target*
prompt (guidance scale ``s_tgt``)::

    z = DPM-Encoder(x0; c_src, s_src),        x_edit = G(z; c_tgt, s_tgt).

Both trajectories advance together in :func:`edit_latents`, the core shared by the two entry
points: at step ``t`` the source state ``x^s_t`` draws ``x^s_{t-1} ~ q(x_{t-1} | x^s_t, x0)``, the
noise ``eps_t`` the source branch would have needed is solved for (DPM-Encoder), and the target
state takes the sampler step with the *same* ``eps_t``. One batched UNet call per step evaluates
all branches: 3 when ``s_src == 1`` (source conditional, target unconditional and conditional),
4 otherwise. With identical prompts and scales the edit reconstructs ``x0`` exactly.

Entry points:

* :func:`cycle_edit` for our pixel-space model (UNet2DConditionModel + CLIP text encoder);
* :func:`cycle_edit_pipeline` for any diffusers ``StableDiffusionPipeline``: it adds the VAE and
  prompt encoding around the same core, in latent space.

The same editor with the *edit-friendly* encoder of Huberman-Spiegelglas et al. (``method="edit-friendly"``,
what diffusers' LEdits++ inverts with): the source states are drawn independently from
``q(x_t | x0)`` instead of as one posterior chain (:func:`dpmlatent.encoder.edit_friendly_encode`); the
noises are solved for and shared with the target branch in the same way.

Baselines through the same interface (``method=``): ``"sdedit"`` (noise to ``t0``, denoise under
the target prompt with fresh noise, eta = 1 by default) and ``"ddim-inversion"`` (deterministic
DDIM inversion under the source prompt, DDIM decoding under the target prompt).
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from .encoder import METHOD_ENCODER, _Targets, ddim_decode, ddim_invert, encoder_noise
from .cycle import sdedit_translate
from .latent import check_scheduler, sampling_timesteps, step_with_noise

__all__ = ["METHODS", "ALL_METHODS", "edit_latents", "cycle_edit", "cycle_edit_pipeline", "unet_evaluations_per_step"]

METHODS = ("cyclediffusion", "sdedit", "ddim-inversion")          # the paper's comparison (chapter 5)
ALL_METHODS = (*METHODS, "edit-friendly")                           # and the edit-friendly encoder (issue 22)


def unet_evaluations_per_step(guidance_scale: float, source_guidance_scale: float) -> int:
    """UNet evaluations (batch items per image) of one CycleDiffusion editing step:
    the source branch needs its unconditional half only when ``source_guidance_scale != 1``,
    the target branch only when ``guidance_scale != 1``."""
    return (2 if source_guidance_scale != 1.0 else 1) + (2 if guidance_scale != 1.0 else 1)


def _check_common(eta: float, strength: float, guidance_scale: float, source_guidance_scale: float,
                  method: str) -> None:
    if method not in ALL_METHODS:
        raise ValueError(f"method must be one of {ALL_METHODS}, got {method!r}")
    if method in METHOD_ENCODER and eta == 0:
        raise ValueError(f"eta=0 is deterministic DDIM: {method} has no stochastic latent to encode into "
                         "(diffusers' pipeline silently runs another method here). Use eta in (0, 1], or "
                         "method='ddim-inversion' for the deterministic baseline")
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in (0, 1] for CycleDiffusion, [0, 1] for the baselines; got {eta}")
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength must be in (0, 1], got {strength}")
    for name, value in (("guidance_scale", guidance_scale), ("source_guidance_scale", source_guidance_scale)):
        if not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"{name} must be a number >= 0 (1 = no guidance), got {value!r}")


def _check_states(name: str, states, batch: int) -> None:
    if states is None:
        return
    if not isinstance(states, torch.Tensor) or states.ndim != 3 or len(states) != batch:
        raise ValueError(f"{name} must be a ({batch}, L, D) tensor of prompt token states, got "
                         f"{getattr(states, 'shape', type(states).__name__)}")


@torch.no_grad()
def edit_latents(unet, scheduler, x0: torch.Tensor, *, source_cond: torch.Tensor, cond: torch.Tensor,
                 uncond: torch.Tensor | None, guidance_scale: float, source_guidance_scale: float = 1.0,
                 eta: float = 0.1, num_inference_steps: int = 50, strength: float = 0.8,
                 generator: torch.Generator | None = None, method: str = "cyclediffusion",
                 progress: bool = False) -> torch.Tensor:
    """The core of both entry points: edit ``x0`` (pixels or VAE latents) from the source to the
    target prompt.

    Args:
        unet: a ``UNet2DConditionModel``.
        scheduler: ``DDIMScheduler`` (any prediction type, clipping, spacing; also a last step with
            zero variance) or ``DDPMScheduler`` (eta = 1).
        x0: ``(B, C, H, W)`` on the UNet's device, float32/64.
        source_cond, cond: ``(B, L, D)`` token states of the source and target prompts.
        uncond: ``(B, L, D)`` states of the empty prompt; needed when a guidance scale is not 1.
        guidance_scale, source_guidance_scale: classifier-free guidance of the target (decoding)
            and source (encoding) branches; 1 means none.
        eta: the sampler's stochasticity, in (0, 1] (CycleDiffusion; the paper uses 0.1), default
            eta of SDEdit is the caller's choice. num_inference_steps: >= 1. strength: in (0, 1].
        generator: random draws, in this order (diffusers' CycleDiffusionPipeline draws the same,
            after its VAE sample): the noise of ``x_{t0} ~ q(x_{t0} | x0)``, then one posterior
            noise per step except the last, whose target is ``x0`` itself. For ``"edit-friendly"``:
            one draw per timestep, smallest ``t`` first (as diffusers' LEdits++ inversion).
        method: ``"cyclediffusion"``, ``"edit-friendly"`` (eta in (0, 1]; the paper's is 1),
            ``"sdedit"`` or ``"ddim-inversion"``.

    Returns:
        ``(B, C, H, W)`` edited ``x0`` (same space as the input).
    """
    _check_common(eta, strength, guidance_scale, source_guidance_scale, method)
    check_scheduler(scheduler, eta if method != "ddim-inversion" else 0.0)
    if not isinstance(x0, torch.Tensor) or x0.ndim != 4 or x0.shape[1] != unet.config.in_channels:
        raise ValueError(f"x0 must be a (B, {unet.config.in_channels}, H, W) tensor, got "
                         f"{getattr(x0, 'shape', type(x0).__name__)}")
    if not torch.is_floating_point(x0):
        raise TypeError(f"x0 must be a floating-point tensor, got {x0.dtype}")
    for name, states in (("source_cond", source_cond), ("cond", cond), ("uncond", uncond)):
        _check_states(name, states, len(x0))
    if uncond is None and (guidance_scale != 1.0 or source_guidance_scale != 1.0):
        raise ValueError("uncond (the empty prompt's token states) is needed when a guidance scale is not 1")
    target = dict(cond=cond, uncond=uncond if guidance_scale != 1.0 else None, guidance_scale=guidance_scale)
    source = dict(cond=source_cond, uncond=uncond if source_guidance_scale != 1.0 else None,
                  guidance_scale=source_guidance_scale)
    if method == "ddim-inversion":
        z = ddim_invert(unet, scheduler, x0, num_inference_steps=num_inference_steps, strength=strength,
                        **source)
        return ddim_decode(unet, scheduler, z, **target)
    if method == "sdedit":
        return sdedit_translate(unet, scheduler, x0, eta=eta, num_inference_steps=num_inference_steps,
                                strength=strength, generator=generator, **target)
    timesteps = sampling_timesteps(scheduler, num_inference_steps, strength)
    targets = _Targets(METHOD_ENCODER[method], unet, scheduler, x0, timesteps, eta,
                       generator, source)
    x_src = x_tgt = targets.start()
    n_src = 2 if source["uncond"] is not None else 1
    for i, t in enumerate(tqdm(timesteps, desc=method, disable=not progress)):
        goal = targets.goal(i, x_src)                 # drawn before the UNet call, as the encoder draws it
        # One batched call: [source uncond?, source cond, target uncond?, target cond].
        inputs = [x_src] * n_src + [x_tgt] * (2 if target["uncond"] is not None else 1)
        states = ([uncond] if n_src == 2 else []) + [source_cond] + \
                 ([uncond] if target["uncond"] is not None else []) + [cond]
        both = unet(scheduler.scale_model_input(torch.cat(inputs), t), t,
                    encoder_hidden_states=torch.cat(states)).sample.chunk(len(inputs))
        out_src = both[0] + source_guidance_scale * (both[1] - both[0]) if n_src == 2 else both[0]
        rest = both[n_src:]
        out_tgt = rest[0] + guidance_scale * (rest[1] - rest[0]) if len(rest) == 2 else rest[0]
        eps = (torch.zeros_like(x0) if goal is None
               else encoder_noise(scheduler, out_src, t, x_src, goal, eta, sigma=targets.sigmas[i]))
        x_src = step_with_noise(scheduler, out_src, t, x_src, eps, eta)
        x_tgt = step_with_noise(scheduler, out_tgt, t, x_tgt, eps, eta)
    return x_tgt


def _prompts(prompt, batch: int, name: str) -> list[str]:
    prompts = [prompt] * batch if isinstance(prompt, str) else prompt
    if not isinstance(prompts, (list, tuple)) or not all(isinstance(p, str) for p in prompts):
        raise TypeError(f"{name} must be a string or a list of strings, got {type(prompt).__name__}")
    if len(prompts) != batch:
        raise ValueError(f"{name} has {len(prompts)} prompts for {batch} images; give one per image or one string")
    return list(prompts)


def cycle_edit(unet, text_encoder, tokenizer, scheduler, image: torch.Tensor, source_prompt, prompt, *,
               strength: float = 0.8, num_inference_steps: int = 50, guidance_scale: float = 3.0,
               source_guidance_scale: float = 1.0, eta: float = 0.1, generator: torch.Generator | None = None,
               method: str = "cyclediffusion", progress: bool = False) -> torch.Tensor:
    """Edit pixel-space images with a text-conditional ``UNet2DConditionModel`` (our tiny model).

    Args:
        image: ``(B, C, H, W)`` in ``[-1, 1]`` on the UNet's device.
        source_prompt, prompt: a string, or one per image (e.g. ``"a handwritten three"`` to
            ``"a handwritten eight"``).
        Others: see :func:`edit_latents`.

    Returns:
        ``(B, C, H, W)`` edited images in ``[-1, 1]``.
    """
    from .text import encode_prompts

    if not isinstance(image, torch.Tensor) or image.ndim != 4:
        raise ValueError(f"image must be a (B, C, H, W) tensor, got {getattr(image, 'shape', type(image).__name__)}")
    lo, hi = image.min().item(), image.max().item()
    if lo < -1 - 1e-4 or hi > 1 + 1e-4:
        raise ValueError(f"image must take values in [-1, 1]; got [{lo:.4g}, {hi:.4g}]")
    b = len(image)
    src, tgt = _prompts(source_prompt, b, "source_prompt"), _prompts(prompt, b, "prompt")
    states = encode_prompts(text_encoder, tokenizer, src + tgt + [""] * b).to(image.dtype)
    return edit_latents(unet, scheduler, image, source_cond=states[:b], cond=states[b:2 * b], uncond=states[2 * b:],
                        guidance_scale=guidance_scale, source_guidance_scale=source_guidance_scale, eta=eta,
                        num_inference_steps=num_inference_steps, strength=strength, generator=generator,
                        method=method, progress=progress).clamp(-1, 1)


@torch.no_grad()
def cycle_edit_pipeline(pipe, image, source_prompt, prompt, *, strength: float = 0.8,
                        num_inference_steps: int = 50, guidance_scale: float = 7.5,
                        source_guidance_scale: float = 1.0, eta: float = 0.1,
                        generator: torch.Generator | None = None, output_type: str = "pil",
                        method: str = "cyclediffusion", progress: bool = False):
    """CycleDiffusion editing with any diffusers ``StableDiffusionPipeline`` (latent space).

    ``pipe.image_processor`` turns ``image`` (PIL image(s), a numpy array ``(B, H, W, 3)`` or a
    tensor ``(B, 3, H, W)``, both in [0, 1]) into a batch in [-1, 1]; the VAE encodes it (a sample of its posterior, drawn from
    ``generator`` first, times ``scaling_factor``); :func:`edit_latents` edits the latents with
    ``pipe.scheduler`` and the prompts encoded by ``pipe.encode_prompt``; the VAE decodes.

    Conventions shared with diffusers' ``CycleDiffusionPipeline``, so that both give the same image
    for the same settings and generator seed: the same draw order (VAE sample, the noise of
    ``x_{t0}``, one posterior noise per step but the last), the same timesteps
    (``set_timesteps`` then the last ``int(num_inference_steps * strength)``), and the empty
    prompt as the unconditional branch. Differences: the source branch's guidance is applied
    whenever ``source_guidance_scale != 1`` (diffusers applies it only when ``guidance_scale > 1``);
    every prediction type works (diffusers solves for the noise assuming epsilon); ``eta = 0``
    raises instead of silently running another method; a last step with zero variance is handled
    instead of dividing by zero.

    Returns:
        ``pipe.image_processor.postprocess`` of the edit: a list of PIL images (``"pil"``), a
        numpy array ``(B, H, W, 3)`` in [0, 1] (``"np"``) or a tensor ``(B, 3, H, W)`` (``"pt"``).
    """
    if output_type not in ("pil", "np", "pt"):
        raise ValueError(f"output_type must be 'pil', 'np' or 'pt', got {output_type!r}")
    device, dtype = pipe.unet.device, pipe.unet.dtype
    x = pipe.image_processor.preprocess(image).to(device=device, dtype=pipe.vae.dtype)
    if x.ndim != 4 or x.shape[1] != pipe.vae.config.in_channels:
        raise ValueError(f"image must give (B, {pipe.vae.config.in_channels}, H, W) after preprocessing, "
                         f"got {tuple(x.shape)}")
    b = len(x)
    src, tgt = _prompts(source_prompt, b, "source_prompt"), _prompts(prompt, b, "prompt")
    latents = pipe.vae.encode(x).latent_dist.sample(generator) * pipe.vae.config.scaling_factor
    cond, uncond = pipe.encode_prompt(tgt, device, 1, True)
    source_cond, _ = pipe.encode_prompt(src, device, 1, True)
    edited = edit_latents(pipe.unet, pipe.scheduler, latents.to(dtype), source_cond=source_cond, cond=cond,
                          uncond=uncond, guidance_scale=guidance_scale, source_guidance_scale=source_guidance_scale,
                          eta=eta, num_inference_steps=num_inference_steps, strength=strength, generator=generator,
                          method=method, progress=progress)
    decoded = pipe.vae.decode(edited.to(pipe.vae.dtype) / pipe.vae.config.scaling_factor).sample
    return pipe.image_processor.postprocess(decoded, output_type=output_type)
