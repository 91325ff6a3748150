"""The tiny DCGAN: the rebuild command, loading, batch independence, quality of the shipped ones."""

import pytest
import torch

from dpmlatent import train, zoo
from dpmlatent.gan import GANConfig, Generator


def test_gan_rebuild_and_load(tmp_path):
    train.main(["gan-handwritten", "--steps", "2", "--root", str(tmp_path)])
    g = zoo.load("gan-handwritten", root=tmp_path)
    assert isinstance(g, Generator) and not g.training
    x = g(torch.randn(5, g.config.latent_dim))
    assert x.shape == (5, 1, 8, 8) and x.abs().max() <= 1
    # eval-mode BatchNorm (running statistics): an image does not depend on the rest of the batch
    z = torch.randn(4, g.config.latent_dim)
    assert torch.allclose(g(z)[:1], g(z[:1]), atol=1e-6)
    with pytest.raises(ValueError, match=r"z must have shape \(B, 32\)"):
        g(torch.randn(2, 16))


def test_gan_training_validation():
    from dpmlatent.gan import Discriminator

    with pytest.raises(ValueError, match="steps"):
        train.train_gan(Generator(), Discriminator(), torch.zeros(4, 1, 8, 8), steps=0)


@pytest.mark.slow
def test_shipped_gan_quality():
    from dpmlatent import metrics

    g = zoo.load("gan-handwritten")
    with torch.no_grad():
        x = g(torch.randn(512, GANConfig().latent_dim, generator=torch.Generator().manual_seed(0)))
    row = metrics.quality_row("gan", x, zoo.load("digit-classifier"), train.training_data("handwritten", "test").images)
    assert row.confident >= 0.7 and row.min_class >= 0.03
