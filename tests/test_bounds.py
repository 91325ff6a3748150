import copy

import pytest

import torch
from diffusers import DDIMScheduler

from dpmlatent.bounds import eps_coefficient, trajectory_bound
from dpmlatent.latent import decode, sample_latent


def test_bound_holds_at_every_step_and_ends_at_the_decoded_distance(tiny_unet):
    other = copy.deepcopy(tiny_unet)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05 * torch.randn_like(p))
    s = DDIMScheduler(beta_schedule="squaredcos_cap_v2", clip_sample=False)
    z = sample_latent((3, 1, 8, 8), s, 10, eta=0.5, generator=torch.Generator().manual_seed(0))
    pd = trajectory_bound(tiny_unet, other, s, z, eta=0.5)
    assert pd.distance.shape == (11, 3) and pd.bound.shape == (11, 3) and pd.disagreement.shape == (10, 3)
    assert (pd.bound >= pd.distance * (1 - 1e-5) - 1e-6).all()
    with torch.no_grad():
        final = (decode(tiny_unet, s, z, eta=0.5) - decode(other, s, z, eta=0.5)).flatten(1).norm(dim=1)
    torch.testing.assert_close(pd.distance[-1], final, rtol=1e-4, atol=1e-5)


def test_same_model_has_zero_distance_and_bound(tiny_unet):
    s = DDIMScheduler(beta_schedule="squaredcos_cap_v2")
    z = sample_latent((2, 1, 8, 8), s, 5, eta=1.0, generator=torch.Generator().manual_seed(0))
    pd = trajectory_bound(tiny_unet, tiny_unet, s, z, eta=1.0)
    assert pd.distance.abs().max() == 0 and pd.bound.abs().max() == 0


def test_eps_coefficient_matches_the_ddim_formula():
    s = DDIMScheduler(beta_schedule="squaredcos_cap_v2", clip_sample=False, set_alpha_to_one=False)
    s.set_timesteps(10)
    t, prev = int(s.timesteps[3]), int(s.timesteps[4])
    a_t, a_prev = s.alphas_cumprod[t].double(), s.alphas_cumprod[prev].double()
    eta = 0.5
    sigma = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).sqrt()
    expected = (1 - a_prev - sigma**2).sqrt() - a_prev.sqrt() * (1 - a_t).sqrt() / a_t.sqrt()
    assert abs(eps_coefficient(s, t, eta, torch.zeros(1, 1, 8, 8)) - expected.item()) < 1e-5


def test_step_jacobian_norm_matches_the_explicit_jacobian(tiny_unet):
    from dpmlatent.bounds import step_jacobian_norm
    from dpmlatent.latent import step_with_noise

    s = DDIMScheduler(beta_schedule="squaredcos_cap_v2", clip_sample=False)
    s.set_timesteps(10)
    t = s.timesteps[4]
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    got = step_jacobian_norm(tiny_unet, s, x, t, eta=0.5)
    power = step_jacobian_norm(tiny_unet, s, x, t, eta=0.5, exact_up_to=0, iterations=30,
                               generator=torch.Generator().manual_seed(0))
    assert (power <= got * (1 + 1e-4)).all() and (power >= 0.9 * got).all()   # from below, and close
    for b in range(2):
        def mu(v):
            v = v.view(1, 1, 8, 8)
            return step_with_noise(s, tiny_unet(v, t).sample, t, v, torch.zeros_like(v), 0.5).flatten()
        jac = torch.autograd.functional.jacobian(mu, x[b].flatten())
        assert abs(got[b].item() - torch.linalg.matrix_norm(jac, 2).item()) < 1e-5 * got[b].item()


def test_predicted_bound_is_zero_for_one_model_and_exact_for_a_linear_gap(tiny_unet):
    from dpmlatent.bounds import predicted_bound

    s = DDIMScheduler(beta_schedule="squaredcos_cap_v2", clip_sample=False)
    z = sample_latent((3, 1, 8, 8), s, 6, eta=0.5, generator=torch.Generator().manual_seed(0))
    same = predicted_bound(tiny_unet, tiny_unet, s, z, eta=0.5, iterations=5)
    assert same.bound.abs().max() == 0 and same.lipschitz.shape == (6, 3)
    other = copy.deepcopy(tiny_unet)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05 * torch.randn_like(p))
    pred = predicted_bound(tiny_unet, other, s, z, eta=0.5, iterations=5)
    reused = predicted_bound(tiny_unet, other, s, z, eta=0.5, lipschitz=pred.lipschitz)
    torch.testing.assert_close(reused.bound, pred.bound)
    with pytest.raises(ValueError, match="clip_sample=False"):
        predicted_bound(tiny_unet, other, DDIMScheduler(beta_schedule="squaredcos_cap_v2"), z, eta=0.5)
    with pytest.raises(ValueError, match="lipschitz must have shape"):
        predicted_bound(tiny_unet, other, s, z, eta=0.5, lipschitz=pred.lipschitz[:2])
