"""The ideal denoiser of a finite data set (chapter 2's control for the encoder's heavy tails)."""

import math

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from dpmlatent.encoder import dpm_encode, perfect_model_output
from dpmlatent.ideal import IdealDenoiser
from dpmlatent.latent import decode


def _data(k=5, seed=0):
    return torch.rand(k, 1, 4, 4, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_posterior_mean_matches_bayes_rule_by_hand():
    s = DDPMScheduler()
    data, t = _data(), 400
    model = IdealDenoiser(data, s)
    x = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    abar = s.alphas_cumprod[t].double()
    like = torch.stack([torch.exp(-((x - abar.sqrt() * d.double()) ** 2).sum((1, 2, 3)) / (2 * (1 - abar)))
                        for d in data], 1)                                    # (3, K) Gaussian likelihoods
    w = like / like.sum(1, keepdim=True)
    expected = torch.einsum("bk,kchw->bchw", w, data.double())
    torch.testing.assert_close(model.posterior_mean(x, t), expected)


def test_one_image_gives_the_perfect_output_for_every_prediction_type():
    data = _data(1)
    for kind in ("epsilon", "sample", "v_prediction"):
        s = DDIMScheduler(prediction_type=kind)
        x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(2))
        got = IdealDenoiser(data, s)(x, torch.tensor(500)).sample
        want = perfect_model_output(s, data.expand(2, -1, -1, -1), x, 500)
        assert got.dtype == x.dtype
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_near_zero_noise_recovers_the_nearest_image():
    s = DDPMScheduler()
    data = _data(8)
    abar = s.alphas_cumprod[1].double()
    x = abar.sqrt() * data[3:4].double() + 1e-3 * torch.randn(1, 1, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(IdealDenoiser(data, s).posterior_mean(x, 1), data[3:4].double(), rtol=0, atol=1e-8)


def test_dpm_encoder_is_exact_with_the_ideal_denoiser():
    s = DDIMScheduler(clip_sample=False)
    data = _data(16).double()
    model = IdealDenoiser(data, s)
    z = dpm_encode(model, s, data[:4], eta=0.5, num_inference_steps=10, generator=torch.Generator().manual_seed(0))
    assert (decode(model, s, z, eta=0.5) - data[:4]).abs().max() < 1e-10


def test_bad_input_raises():
    s = DDPMScheduler()
    with pytest.raises(ValueError, match="data must be"):
        IdealDenoiser(torch.zeros(4, 4), s)
    with pytest.raises(ValueError, match="finite"):
        IdealDenoiser(torch.full((1, 1, 2, 2), math.nan), s)
    with pytest.raises(TypeError, match="alphas_cumprod"):
        IdealDenoiser(_data(), object())
    with pytest.raises(ValueError, match="sample must have shape"):
        IdealDenoiser(_data(), s)(torch.zeros(1, 1, 5, 5), 10)


def test_smoothed_prior_posterior_mean_matches_quadrature():
    s = DDPMScheduler()
    data = torch.tensor([-0.7, 0.2, 0.9], dtype=torch.float64).view(3, 1, 1, 1)
    tau = 0.15
    model = IdealDenoiser(data, s, bandwidth=tau)
    grid = torch.linspace(-3, 3, 200001, dtype=torch.float64)
    prior = sum(torch.exp(-(grid - d) ** 2 / (2 * tau ** 2)) for d in data.flatten())
    for t in (3, 80, 500):
        abar = s.alphas_cumprod[t].double()
        for x in (-0.9, 0.1, 1.3):
            like = torch.exp(-(x - abar.sqrt() * grid) ** 2 / (2 * (1 - abar)))
            want = (grid * prior * like).sum() / (prior * like).sum()
            got = model.posterior_mean(torch.tensor([[[[x]]]], dtype=torch.float64), t)
            torch.testing.assert_close(got.flatten()[0], want, rtol=0, atol=1e-6)


def test_sample_prior_and_bandwidth_checks():
    data = _data(4).double()
    model = IdealDenoiser(data, DDPMScheduler(), bandwidth=0.1)
    x = model.sample_prior(20000, generator=torch.Generator().manual_seed(0))
    nearest = torch.cdist(x.flatten(1), data.flatten(1)).argmin(1)
    resid = x - data[nearest]
    assert abs(resid.std().item() - 0.1) < 0.003
    with pytest.raises(ValueError, match="bandwidth"):
        IdealDenoiser(data, DDPMScheduler(), bandwidth=-1.0)
    with pytest.raises(ValueError, match="num"):
        model.sample_prior(0)
