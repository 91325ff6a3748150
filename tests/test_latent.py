import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, EulerDiscreteScheduler

from dpmlatent.latent import LatentCode, decode, sample_latent, sampling_timesteps


def _ddim(**kw):
    return DDIMScheduler(beta_schedule="squaredcos_cap_v2", **kw)


def test_sample_latent_shapes_and_gaussian():
    z = sample_latent((4, 1, 8, 8), _ddim(), 20, eta=0.5, generator=torch.Generator().manual_seed(0))
    assert z.x_start.shape == (4, 1, 8, 8) and z.noises.shape == (20, 4, 1, 8, 8)
    assert z.dim == 21 * 64 and z.flatten().shape == (4, 21 * 64)
    flat = z.flatten()
    assert abs(flat.mean()) < 0.05 and abs(flat.std() - 1) < 0.05
    half = sample_latent((2, 1, 8, 8), _ddim(), 20, eta=0.5, strength=0.5)
    assert len(half.timesteps) == 10 and half.timesteps[0] < z.timesteps[0]


def test_flatten_unflatten_and_indexing():
    z = sample_latent((3, 1, 8, 8), _ddim(), 5, eta=1.0, generator=torch.Generator().manual_seed(1))
    back = z.unflatten(z.flatten())
    assert torch.equal(back.x_start, z.x_start) and torch.equal(back.noises, z.noises)
    assert torch.equal(z[1].x_start, z.x_start[1:2]) and torch.equal(z[1].noises, z.noises[:, 1:2])
    with pytest.raises(ValueError, match="flat must have shape"):
        z.unflatten(torch.zeros(3, 10))
    with pytest.raises(ValueError, match="noises"):
        LatentCode(z.x_start, z.noises[:, :2], z.timesteps, 5)


def test_same_generator_same_code():
    a = sample_latent((2, 1, 8, 8), _ddim(), 7, eta=1.0, generator=torch.Generator().manual_seed(3))
    b = sample_latent((2, 1, 8, 8), _ddim(), 7, eta=1.0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.flatten(), b.flatten())


@pytest.mark.parametrize("scheduler,eta", [(_ddim(), 0.5), (_ddim(), 0.0),
                                           (DDPMScheduler(beta_schedule="squaredcos_cap_v2"), 1.0)])
def test_decode_is_deterministic_and_batch_equals_singles(tiny_unet, scheduler, eta):
    z = sample_latent((3, 1, 8, 8), scheduler, 8, eta=eta, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        x = decode(tiny_unet, scheduler, z, eta=eta)
        assert torch.equal(x, decode(tiny_unet, scheduler, z, eta=eta))
        singles = torch.cat([decode(tiny_unet, scheduler, z[i], eta=eta) for i in range(3)])
    assert x.shape == (3, 1, 8, 8) and torch.isfinite(x).all()
    torch.testing.assert_close(x, singles, atol=1e-5, rtol=0)


def test_decode_noise_matters_only_when_stochastic(tiny_unet):
    s = _ddim()
    z = sample_latent((1, 1, 8, 8), s, 6, eta=1.0, generator=torch.Generator().manual_seed(0))
    z2 = LatentCode(z.x_start, torch.randn_like(z.noises), z.timesteps, z.num_inference_steps)
    with torch.no_grad():
        assert not torch.allclose(decode(tiny_unet, s, z, eta=1.0), decode(tiny_unet, s, z2, eta=1.0))
        assert torch.equal(decode(tiny_unet, s, z, eta=0.0), decode(tiny_unet, s, z2, eta=0.0))


def test_decode_is_differentiable(tiny_unet):
    s = _ddim(clip_sample=False)
    z = sample_latent((2, 1, 8, 8), s, 4, eta=0.5, generator=torch.Generator().manual_seed(0))
    flat = z.flatten().requires_grad_(True)
    x = decode(tiny_unet, s, z.unflatten(flat), eta=0.5)
    x.square().sum().backward()
    assert flat.grad is not None and torch.isfinite(flat.grad).all() and flat.grad.abs().sum() > 0


def test_decode_matches_the_scheduler_loop(tiny_unet):
    """eta=1 decoding with our noise == the scheduler's own loop fed the same noise."""
    s = _ddim()
    z = sample_latent((2, 1, 8, 8), s, 5, eta=1.0, generator=torch.Generator().manual_seed(0))
    s.set_timesteps(5)
    x = z.x_start
    with torch.no_grad():
        for t, n in zip(s.timesteps, z.noises):
            x = s.step(tiny_unet(x, t).sample, t, x, eta=1.0, variance_noise=n).prev_sample
        assert torch.equal(x, decode(tiny_unet, s, z, eta=1.0))


def test_bad_arguments(tiny_unet):
    with pytest.raises(TypeError, match="DDIMScheduler or DDPMScheduler"):
        sample_latent((1, 1, 8, 8), EulerDiscreteScheduler(), 5, eta=1.0)
    with pytest.raises(ValueError, match="eta"):
        sample_latent((1, 1, 8, 8), DDPMScheduler(), 5, eta=0.5)
    with pytest.raises(ValueError, match="eta must be in"):
        sample_latent((1, 1, 8, 8), _ddim(), 5, eta=1.5)
    with pytest.raises(ValueError, match="strength"):
        sampling_timesteps(_ddim(), 10, 0.0)
    with pytest.raises(ValueError, match="num_inference_steps"):
        sampling_timesteps(_ddim(), 0)
    z = sample_latent((1, 3, 8, 8), _ddim(), 5, eta=1.0)
    with pytest.raises(ValueError, match="in_channels=1"):
        decode(tiny_unet, _ddim(), z, eta=1.0)
    z = sample_latent((1, 1, 8, 8), _ddim(), 5, eta=1.0)
    with pytest.raises(ValueError, match="timesteps do not match"):
        decode(tiny_unet, _ddim(timestep_spacing="trailing"), z, eta=1.0)


def test_slerp_endpoints_and_norm():
    from dpmlatent.latent import slerp

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1000, generator=g), torch.randn(1000, generator=g)
    path = slerp(a, b, torch.linspace(0, 1, 5))
    torch.testing.assert_close(path[0], a)
    torch.testing.assert_close(path[-1], b)
    assert (path.norm(dim=1) / 1000 ** 0.5 - 1).abs().max() < 0.1
    assert (((a + b) / 2).norm() / 1000 ** 0.5) < 0.8  # the straight line shrinks
    with pytest.raises(ValueError):
        slerp(a, b[:10], torch.tensor([0.5]))


def test_decode_callback_sees_every_step(tiny_unet):
    s = _ddim()
    z = sample_latent((2, 1, 8, 8), s, 6, eta=0.5, generator=torch.Generator().manual_seed(0))
    seen = []
    with torch.no_grad():
        x = decode(tiny_unet, s, z, eta=0.5, callback=lambda i, t, x: seen.append((i, int(t), x.clone())))
    assert [i for i, _, _ in seen] == list(range(6))
    assert [t for _, t, _ in seen] == z.timesteps.tolist()
    assert torch.equal(seen[-1][2], x)
