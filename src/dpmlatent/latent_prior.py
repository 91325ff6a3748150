"""A diffusion model on an LRDM's representations: Diff-AE's second stage, the baseline LRDM's
N(0, I) prior is meant to make unnecessary (kind ``"latent-diffusion"``).

Preechakul et al. (Diff-AE, 2022) train a diffusion autoencoder without a prior on its code and then
fit a second diffusion model to the codes of the training images, so that new codes can be sampled.
LRDM instead trains the code towards N(0, I) with a KL term (:mod:`dpmlatent.lrdm`); where the
posterior means do not fill N(0, I) ("the prior hole"), decoding ``r ~ N(0, I)`` leaves the data.
:class:`LatentPrior` is the Diff-AE answer for one shipped LRDM: a DDPM (a diffusers ``UNet2DModel``
on ``(C_r, 2, 2)`` "images", cosine schedule, x0-prediction, no clipping) trained on the
standardised posterior means of the LRDM's training images (each dimension to zero mean and unit
variance, as Diff-AE normalises its codes); :meth:`LatentPrior.sample` returns codes in the LRDM's
own units, ready for :func:`dpmlatent.lrdm.generate`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .fitting import TrainResult

__all__ = ["LatentPrior", "unet_config", "representations", "make", "fit", "save", "load"]


def unet_config(r_channels: int) -> dict:
    """A one-level ``UNet2DModel`` for ``(r_channels, 2, 2)`` codes (3x3 convolutions on 2x2 see every
    position), 64 channels, two ResNet layers, no attention (0.9M parameters)."""
    return dict(sample_size=2, in_channels=r_channels, out_channels=r_channels, layers_per_block=2,
                block_out_channels=(64,), down_block_types=("DownBlock2D",), up_block_types=("UpBlock2D",),
                norm_num_groups=8)


def make_scheduler():
    """The zoo's cosine 1000-step DDPM schedule with x0-prediction and no clipping.

    Standardised codes are not confined to [-1, 1], so the clipping that keeps the image models' first
    steps sane is not available; and an epsilon-predictor's estimate of x0 at the first DDIM step,
    ``(x - sqrt(1 - abar) eps) / sqrt(abar)`` with ``abar = 1e-3``, amplifies its errors 30-fold (measured:
    samples with three times the codes' spread). Predicting x0 directly has no such division."""
    from diffusers import DDPMScheduler

    from .diffusion import make_scheduler as zoo_scheduler

    return DDPMScheduler.from_config(zoo_scheduler().config, clip_sample=False, prediction_type="sample")


@torch.no_grad()
def representations(model, images: torch.Tensor, labels: torch.Tensor | None = None, *,
                    batch_size: int = 512) -> torch.Tensor:
    """The posterior means ``(N, C_r, 2, 2)`` of ``images`` under an LRDM (:func:`dpmlatent.lrdm.posterior`)."""
    from .lrdm import posterior

    means = [posterior(model, images[i:i + batch_size], None if labels is None else labels[i:i + batch_size])[0]
             for i in range(0, len(images), batch_size)]
    return torch.cat(means)


class LatentPrior(torch.nn.Module):
    """A DDPM over standardised LRDM codes: ``unet``, ``scheduler``, the codes' per-dimension ``mean``
    and ``std`` (buffers, ``(C_r, 2, 2)``) and the ``lrdm`` it was fitted to (a zoo name)."""

    def __init__(self, unet, scheduler, mean: torch.Tensor, std: torch.Tensor, lrdm: str):
        super().__init__()
        self.unet, self.scheduler, self.lrdm = unet, scheduler, lrdm
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", std.clone())

    def standardise(self, r: torch.Tensor) -> torch.Tensor:
        return (r - self.mean) / self.std

    def unstandardise(self, u: torch.Tensor) -> torch.Tensor:
        return u * self.std + self.mean

    @torch.no_grad()
    def sample(self, num: int, *, num_inference_steps: int = 50, eta: float = 0.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """``num`` codes ``(num, C_r, 2, 2)`` in the LRDM's units (DDIM with ``eta``)."""
        from diffusers import DDIMScheduler

        from .sampling import sample

        if not isinstance(num, int) or isinstance(num, bool) or num < 1:
            raise ValueError(f"num must be a positive integer, got {num!r}")
        sched = DDIMScheduler.from_config(self.scheduler.config)
        u = sample(self.unet, sched, num, num_inference_steps=num_inference_steps, eta=eta, generator=generator,
                   progress=False)
        return self.unstandardise(u)


# --- zoo hooks (kind "latent-diffusion") ------------------------------------------------------

def _lrdm_name(entry) -> str:
    name = dict(entry.config).get("lrdm")
    if name is None:
        raise ValueError(f"{entry.name}: a latent-diffusion entry names its LRDM in config, e.g. (('lrdm', 'lrdm-kl1e-3'),)")
    return name


def make(entry, train) -> LatentPrior:
    """A fresh :class:`LatentPrior` for the LRDM named in ``entry.config`` (``("lrdm", NAME)``): its
    training images' posterior means fix the standardisation; UNet weights from ``entry.seed``.

    The LRDM is read from :func:`dpmlatent.zoo.checkpoint_root` (the shipped zoo, or
    ``$DPMLATENT_CHECKPOINTS``), also when ``python -m dpmlatent.train`` writes the prior elsewhere with
    ``--root``: to rebuild both into another folder, rebuild the LRDM there first and point
    ``DPMLATENT_CHECKPOINTS`` at it."""
    from diffusers import UNet2DModel

    from . import zoo

    model = zoo.load(_lrdm_name(entry))
    r = representations(model, train.images, train.labels if model.config.num_classes else None)
    torch.manual_seed(entry.seed)
    unet = UNet2DModel(**unet_config(model.config.r_channels))
    return LatentPrior(unet, make_scheduler(), r.mean(0), r.std(0).clamp_min(1e-6), _lrdm_name(entry))


def fit(prior: LatentPrior, train, entry, *, steps: int, progress: bool = True) -> TrainResult:
    """:func:`dpmlatent.diffusion.train_diffusion` on the standardised posterior means of ``train``."""
    from . import zoo
    from .diffusion import train_diffusion

    model = zoo.load(prior.lrdm)
    r = representations(model, train.images, train.labels if model.config.num_classes else None)
    result = train_diffusion(prior.unet, prior.scheduler, prior.standardise(r), steps=steps, seed=entry.seed,
                             progress=progress)
    result.model = LatentPrior(result.model, prior.scheduler, prior.mean, prior.std, prior.lrdm).eval()
    result.info["lrdm"] = prior.lrdm
    return result


def save(prior: LatentPrior, folder: Path) -> None:
    """diffusers' pipeline layout (``unet/``, ``scheduler/``) plus ``standardisation.json`` (the LRDM's
    name and the codes' per-dimension mean and std)."""
    from diffusers import DDPMPipeline

    folder = Path(folder)
    DDPMPipeline(unet=prior.unet, scheduler=prior.scheduler).save_pretrained(folder)
    (folder / "standardisation.json").write_text(json.dumps(
        {"lrdm": prior.lrdm, "shape": list(prior.mean.shape), "mean": prior.mean.flatten().tolist(),
         "std": prior.std.flatten().tolist()}, indent=1) + "\n")


def load(folder: Path, *, device=None, dtype=None) -> LatentPrior:
    from .diffusion import load as load_pipeline

    folder = Path(folder)
    pipe = load_pipeline(folder, dtype=dtype)
    info = json.loads((folder / "standardisation.json").read_text())
    shape = tuple(info["shape"])
    mean = torch.tensor(info["mean"], dtype=pipe.unet.dtype).view(shape)
    std = torch.tensor(info["std"], dtype=pipe.unet.dtype).view(shape)
    prior = LatentPrior(pipe.unet, pipe.scheduler, mean, std, info["lrdm"]).eval()
    return prior.to(device=device) if device is not None else prior
