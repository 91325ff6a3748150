"""A tiny DCGAN for 8x8 digits: the GAN side of the guidance chapter.

A GAN's generator (Goodfellow et al. 2014) is a map ``x = G(z)`` from its own Gaussian code
``z ~ N(0, I_d)`` (here ``d = 32``), the same kind of object as a diffusion model's sampler
(:mod:`dpmlatent.latent`), so the same latent-space guidance (:mod:`dpmlatent.guidance`) applies.

The recipe is the classic DCGAN (Radford et al. 2016), scaled to 8x8:

* :class:`Generator` ``(B, latent_dim) -> (B, 1, 8, 8)`` in ``[-1, 1]``: a linear layer to 2x2,
  two transposed convolutions to 8x8, BatchNorm + ReLU, tanh. In eval mode BatchNorm uses its
  running statistics, so ``G`` of one code does not depend on the rest of the batch;
* :class:`Discriminator` ``(B, 1, 8, 8) -> (B,)`` logits: strided convolutions, BatchNorm, LeakyReLU;
* trained with the non-saturating loss (:func:`train_gan`).

Measured while building it: a hinge-loss variant with spectral normalisation and GroupNorm collapsed
onto a few digits at this size (a class missing entirely, FD 380); this recipe does not.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .fitting import TrainResult, check_steps, fit as fit_loop

__all__ = ["GANConfig", "Generator", "Discriminator", "train_gan", "make", "fit", "save", "load"]


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


def train_gan(generator, discriminator, images: torch.Tensor, *, steps: int, batch_size: int = 128,
              lr: float = 2e-4, seed: int = 0, progress: bool = True) -> TrainResult:
    """Train a GAN (in place) with the non-saturating loss (Goodfellow et al. 2014):

    ``L_D = E[softplus(-D(x))] + E[softplus(D(G(z)))]``, ``L_G = E[softplus(-D(G(z)))]``, one D step
    and one G step per iteration, Adam(lr, betas 0.5, 0.999) as in DCGAN. ``losses`` records ``L_D``
    (``history`` has both).

    Returns:
        :class:`~dpmlatent.fitting.TrainResult` whose ``model`` is the generator, in eval mode
        (BatchNorm running statistics).
    """
    check_steps(steps, batch_size)
    gen = torch.Generator().manual_seed(seed)
    device = next(generator.parameters()).device
    images = images.to(device)
    opt_g = torch.optim.Adam(generator.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=lr, betas=(0.5, 0.999))
    generator.train()
    discriminator.train()

    def loss_fn():
        """One discriminator step on a fresh batch, then the generator's loss on the same fakes."""
        real = images[torch.randint(len(images), (batch_size,), generator=gen).to(device)]
        fake = generator(torch.randn(batch_size, generator.config.latent_dim, generator=gen).to(device))
        loss_d = F.softplus(-discriminator(real)).mean() + F.softplus(discriminator(fake.detach())).mean()
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        return F.softplus(-discriminator(fake)).mean(), {"d_loss": loss_d.item()}

    losses, history = fit_loop(loss_fn, opt_g, steps=steps, record="d_loss", digits=3, progress=progress)
    discriminator.eval()
    return TrainResult(generator.eval(), losses, history)


# --- zoo hooks (kind "gan") --------------------------------------------------------------------

def make(entry, train) -> tuple[Generator, Discriminator]:
    """A fresh generator and discriminator (:class:`GANConfig` defaults), weights from ``entry.seed``."""
    torch.manual_seed(entry.seed)
    config = GANConfig()
    return Generator(config), Discriminator(config)


def fit(pair, train, entry, *, steps: int, progress: bool = True) -> TrainResult:
    """:func:`train_gan` on ``train.images`` from ``entry.seed``; the result is the generator."""
    return train_gan(*pair, train.images, steps=steps, seed=entry.seed, progress=progress)


def save(generator: Generator, folder: Path) -> None:
    """``config.json`` + ``model.safetensors`` of the generator (the discriminator is not kept)."""
    from .zoo import write_config_and_weights

    write_config_and_weights(generator.config, generator, folder)


def load(folder: Path, *, device=None, dtype=None) -> Generator:
    from .zoo import read_config_and_weights

    return read_config_and_weights(folder, GANConfig, Generator).to(device=device, dtype=dtype).eval()
