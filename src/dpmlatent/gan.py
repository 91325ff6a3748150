"""A tiny DCGAN for 8x8 digits: the GAN side of the guidance chapter.

A GAN's generator (Goodfellow et al. 2014) is a map ``x = G(z)`` from its own Gaussian code
``z ~ N(0, I_d)`` (here ``d = 32``), the same kind of object as a diffusion model's sampler
(:mod:`dpmlatent.latent`), so the same latent-space guidance (:mod:`dpmlatent.guidance`) applies.

The recipe is the classic DCGAN (Radford et al. 2016), scaled to 8x8:

* :class:`Generator` ``(B, latent_dim) -> (B, 1, 8, 8)`` in ``[-1, 1]``: a linear layer to 2x2,
  two transposed convolutions to 8x8, BatchNorm + ReLU, tanh. In eval mode BatchNorm uses its
  running statistics, so ``G`` of one code does not depend on the rest of the batch;
* :class:`Discriminator` ``(B, 1, 8, 8) -> (B,)`` logits: strided convolutions, BatchNorm, LeakyReLU;
* trained with the non-saturating loss (:func:`dpmlatent.train.train_gan`).

Measured while building it: a hinge-loss variant with spectral normalisation and GroupNorm collapsed
onto a few digits at this size (a class missing entirely, FD 380); this recipe does not.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

__all__ = ["GANConfig", "Generator", "Discriminator"]


@dataclasses.dataclass
class GANConfig:
    latent_dim: int = 32
    width: int = 32


class Generator(nn.Module):
    """``(B, latent_dim)`` codes -> ``(B, 1, 8, 8)`` images in ``[-1, 1]``."""

    def __init__(self, config: GANConfig = GANConfig()):
        super().__init__()
        self.config = config
        w = config.width
        self.fc = nn.Linear(config.latent_dim, 4 * w * 2 * 2)
        self.body = nn.Sequential(
            nn.BatchNorm2d(4 * w), nn.ReLU(),                                              # (B, 4w, 2, 2)
            nn.ConvTranspose2d(4 * w, 2 * w, 4, 2, 1), nn.BatchNorm2d(2 * w), nn.ReLU(),   # (B, 2w, 4, 4)
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1), nn.BatchNorm2d(w), nn.ReLU(),           # (B, w, 8, 8)
            nn.Conv2d(w, 1, 3, padding=1), nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.config.latent_dim:
            raise ValueError(f"z must have shape (B, {self.config.latent_dim}), got {tuple(z.shape)}")
        return self.body(self.fc(z).view(len(z), 4 * self.config.width, 2, 2))


class Discriminator(nn.Module):
    """``(B, 1, 8, 8)`` -> ``(B,)`` real/fake logits."""

    def __init__(self, config: GANConfig = GANConfig()):
        super().__init__()
        w = config.width
        self.body = nn.Sequential(
            nn.Conv2d(1, w, 3, 1, 1), nn.LeakyReLU(0.2),                                 # (B, w, 8, 8)
            nn.Conv2d(w, 2 * w, 4, 2, 1), nn.BatchNorm2d(2 * w), nn.LeakyReLU(0.2),      # (B, 2w, 4, 4)
            nn.Conv2d(2 * w, 4 * w, 4, 2, 1), nn.BatchNorm2d(4 * w), nn.LeakyReLU(0.2),  # (B, 4w, 2, 2)
            nn.Flatten(), nn.Linear(16 * w, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).squeeze(1)
