"""Plain ancestral/DDIM sampling with a diffusers UNet and scheduler.

``x_T ~ N(0, I)``; for each timestep ``t`` of ``scheduler.set_timesteps(n)``:
``x_{t-1} = scheduler.step(unet(x_t, t), t, x_t).prev_sample``.
All scheduler maths (``alphas_cumprod``, spacing, prediction type, clipping) comes from
the scheduler itself.
"""

from __future__ import annotations

import inspect

import torch
from diffusers.utils.torch_utils import randn_tensor
from tqdm.auto import tqdm

__all__ = ["sample"]


def _step_kwargs(scheduler, eta: float, generator) -> dict:
    params = inspect.signature(scheduler.step).parameters
    kwargs = {}
    if "eta" in params:
        kwargs["eta"] = eta
    elif eta != 0.0 and eta != 1.0:
        raise ValueError(f"eta={eta} is only supported by schedulers whose step() takes eta "
                         f"(DDIMScheduler); {type(scheduler).__name__} does not")
    if "generator" in params:
        kwargs["generator"] = generator
    return kwargs


@torch.no_grad()
def sample(unet, scheduler, num_samples: int, *, num_inference_steps: int = 50,
           eta: float = 0.0, generator: torch.Generator | None = None,
           batch_size: int = 256, progress: bool = True) -> torch.Tensor:
    """Draw ``num_samples`` images from an unconditional ``UNet2DModel``.

    Args:
        unet: a diffusers ``UNet2DModel``; its device and dtype are used.
        scheduler: any diffusers scheduler (``DDIMScheduler`` for ``eta``).
        num_samples: number of images, >= 1.
        num_inference_steps: sampler steps, >= 1.
        eta: DDIM's eta (0 = deterministic DDIM, 1 = DDPM-like).
        generator: a ``torch.Generator`` (any device) for reproducible noise.
        batch_size: images per UNet call.
        progress: show a tqdm bar over the batches.

    Returns:
        ``(num_samples, C, H, W)`` tensor; values in ``[-1, 1]`` when the scheduler
        clips, otherwise approximately so.
    """
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
    if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be a positive integer, got {num_inference_steps!r}")
    cfg = unet.config
    size = cfg.sample_size if isinstance(cfg.sample_size, int) else cfg.sample_size[0]
    kwargs = _step_kwargs(scheduler, eta, generator)
    scheduler.set_timesteps(num_inference_steps)
    out = []
    batches = range(0, num_samples, batch_size)
    for start in tqdm(batches, desc="sampling", disable=not progress):
        n = min(batch_size, num_samples - start)
        x = randn_tensor((n, cfg.in_channels, size, size), generator=generator,
                         device=unet.device, dtype=unet.dtype)
        x = x * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            model_in = scheduler.scale_model_input(x, t)
            x = scheduler.step(unet(model_in, t).sample, t, x, **kwargs).prev_sample
        out.append(x)
    return torch.cat(out)
