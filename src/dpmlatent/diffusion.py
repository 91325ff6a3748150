"""The zoo's unconditional pixel diffusion models (kinds ``"diffusion"`` and ``"diffusion-2d"``).

A diffusers ``UNet2DModel`` (:func:`unet_config`) with the cosine 1000-step DDPM schedule
(:func:`make_scheduler`), trained with the "simple" objective of Ho et al. (2020): for ``x0``
from the data, ``t ~ U{0..T-1}``, ``eps ~ N(0, I)``, ``x_t = scheduler.add_noise(x0, eps, t)``,
minimise ``|| eps - eps_theta(x_t, t) ||^2`` (:func:`train_diffusion`); the shipped weights are an
exponential moving average of the trained ones. Stored in diffusers' own pipeline layout and
loaded with ``DDPMPipeline.from_pretrained``.

The zoo hooks (:func:`make`, :func:`fit`, :func:`save`, :func:`load`) are what
``python -m dpmlatent.train NAME`` and :func:`dpmlatent.zoo.load` call for these kinds.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from .fitting import EMA, TrainResult, check_steps, fit as fit_loop

__all__ = ["unet_config", "make_unet", "make_scheduler", "train_diffusion", "make", "fit", "save", "load"]


def unet_config(dataset: str = "handwritten") -> dict:
    """The ``UNet2DModel`` config of the zoo's diffusion models.

    8x8x1 digits: channels (32, 64, 64), one ResNet layer per block, self-attention only at
    2x2 (1.1M parameters). 2-D toy data (``dataset`` starting with ``"toy-"``): a point is a
    2x1x1 image and the UNet a single 1x1 level (3x3 convolutions on 1x1 act as linear layers),
    so the same samplers and encoders run on it unchanged.
    """
    if dataset.startswith("toy-"):
        return dict(sample_size=1, in_channels=2, out_channels=2, layers_per_block=2,
                    block_out_channels=(64,), down_block_types=("DownBlock2D",),
                    up_block_types=("UpBlock2D",), norm_num_groups=8)
    return dict(
        sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
        block_out_channels=(32, 64, 64),
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        norm_num_groups=8, attention_head_dim=32,
    )


def make_unet(seed: int = 0, dataset: str = "handwritten"):
    """A freshly initialised zoo ``UNet2DModel`` for ``dataset`` (weights drawn from ``seed``)."""
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    return UNet2DModel(**unet_config(dataset))


def make_scheduler():
    """The noise schedule stored with every zoo model: 1000-step cosine DDPM, eps-prediction.

    Load it as a ``DDIMScheduler`` with ``DDIMScheduler.from_config(pipe.scheduler.config)``.
    """
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                         prediction_type="epsilon", clip_sample=True)


def train_diffusion(unet, scheduler, images: torch.Tensor, *, steps: int,
                    batch_size: int = 128, lr: float = 2e-4, ema_decay: float = 0.999,
                    seed: int = 0, progress: bool = True) -> TrainResult:
    """Train ``unet`` (in place) to predict what ``scheduler.config.prediction_type`` names: the noise
    added by ``scheduler.add_noise`` (``"epsilon"``, the zoo's image models), the clean sample
    (``"sample"``), or the velocity ``sqrt(abar) eps - sqrt(1 - abar) x0`` (``"v_prediction"``).

    Args:
        unet: a diffusers ``UNet2DModel``; training runs on its device.
        scheduler: a diffusers scheduler with ``add_noise`` and ``num_train_timesteps``.
        images: ``(N, C, H, W)`` training images in ``[-1, 1]``.
        steps: optimiser steps; batch_size: images per step; lr: AdamW learning rate.
        ema_decay: decay of the weight average that is returned, in ``[0, 1)``.
        seed: seeds batches, timesteps and noise.
        progress: tqdm bar with the running loss.

    Returns:
        :class:`~dpmlatent.fitting.TrainResult` with the EMA copy of the UNet and the per-step losses.
    """
    check_steps(steps, batch_size)
    kind = scheduler.config.prediction_type
    if kind not in ("epsilon", "sample", "v_prediction"):
        raise ValueError("train_diffusion trains prediction_type 'epsilon', 'sample' or 'v_prediction'; "
                         f"got {kind!r}")
    device = unet.device
    gen = torch.Generator().manual_seed(seed)
    images = images.to(device)
    ema = EMA([unet], ema_decay)
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.0)
    unet.train()

    def loss_fn() -> torch.Tensor:
        idx = torch.randint(len(images), (batch_size,), generator=gen)
        x0 = images[idx.to(device)]                                           # (B, C, H, W)
        t = torch.randint(scheduler.config.num_train_timesteps, (batch_size,), generator=gen)
        eps = torch.randn(x0.shape, generator=gen).to(device)
        xt = scheduler.add_noise(x0, eps, t.to(device))
        target = eps if kind == "epsilon" else x0 if kind == "sample" else scheduler.get_velocity(x0, eps, t.to(device))
        return F.mse_loss(unet(xt, t.to(device)).sample, target)

    losses, history = fit_loop(loss_fn, opt, steps=steps, ema=ema, progress=progress)
    unet.eval()
    return TrainResult(ema.copies[0], losses, history)


# --- zoo hooks -------------------------------------------------------------------------------

def make(entry, train):
    """A fresh ``DDPMPipeline`` for zoo entry ``entry`` (UNet weights from ``entry.seed``)."""
    from diffusers import DDPMPipeline

    return DDPMPipeline(unet=make_unet(entry.seed, entry.dataset), scheduler=make_scheduler())


def fit(pipe, train, entry, *, steps: int, progress: bool = True) -> TrainResult:
    """:func:`train_diffusion` on ``train.images`` from ``entry.seed``; the result is the pipeline
    with the EMA UNet."""
    from diffusers import DDPMPipeline

    result = train_diffusion(pipe.unet, pipe.scheduler, train.images, steps=steps, seed=entry.seed,
                             progress=progress)
    result.model = DDPMPipeline(unet=result.model, scheduler=pipe.scheduler)
    return result


def save(pipe, folder: Path) -> None:
    """diffusers' ``save_pretrained`` layout: ``model_index.json``, ``unet/``, ``scheduler/``."""
    pipe.save_pretrained(folder)


def load(folder: Path, *, device=None, dtype=None):
    """``DDPMPipeline.from_pretrained(folder)`` in eval mode (``dtype`` given to ``from_pretrained``,
    not to ``.to()``: diffusers warns on casting a loaded model)."""
    from diffusers import DDPMPipeline

    from .zoo import quiet_loading

    kwargs = {"low_cpu_mem_usage": False}
    if dtype is not None:
        kwargs["dtype"] = dtype
    with quiet_loading():
        pipe = DDPMPipeline.from_pretrained(folder, **kwargs)
    pipe.unet.eval()
    return pipe.to(device=device) if device is not None else pipe
