import copy

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
