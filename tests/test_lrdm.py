"""LRDM (dpmlatent.lrdm): shapes, the KL against its closed form, prior sampling, the network
reading r, exact DPM-Encoder on a bound r, reconstruction determinism, bad inputs, save/load."""

import pytest
import torch
from diffusers import DDIMScheduler

from dpmlatent import data, lrdm
from dpmlatent.encoder import dpm_encode
from dpmlatent.latent import decode


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return lrdm.LRDM(lrdm.LRDMConfig(r_channels=4, kl_weight=1e-2)).eval()


@pytest.fixture(scope="module")
def digits():
    return data.handwritten_digits("test").images[:6]


def _ddim(model):
    return DDIMScheduler.from_config(model.scheduler.config)


def test_config_validation_names_the_argument():
    with pytest.raises(ValueError, match="kl_weight"):
        lrdm.LRDMConfig(kl_weight=-1e-3)
    with pytest.raises(ValueError, match="r_size must be 2"):
        lrdm.LRDMConfig(r_size=4)
    with pytest.raises(ValueError, match="num_classes"):
        lrdm.LRDMConfig(num_classes=1)
    with pytest.raises(ValueError, match="r_channels must be a positive integer"):
        lrdm.LRDMConfig(r_channels=0)
    with pytest.raises(ValueError, match="dataset"):
        lrdm.LRDMConfig(dataset="toy-moons")
    assert lrdm.LRDMConfig(r_channels=3).r_shape == (3, 2, 2)


def test_posterior_shapes_and_kl_closed_form(model, digits):
    mean, logvar = lrdm.posterior(model, digits)
    assert mean.shape == logvar.shape == (6, 4, 2, 2)
    assert logvar.min() >= lrdm.LOGVAR_RANGE[0] and logvar.max() <= lrdm.LOGVAR_RANGE[1]
    m, lv = torch.randn(5, 4, 2, 2, dtype=torch.float64), torch.randn(5, 4, 2, 2, dtype=torch.float64)
    q, p = torch.distributions.Normal(m, (0.5 * lv).exp()), torch.distributions.Normal(0.0, 1.0)
    reference = torch.distributions.kl_divergence(q, p)
    assert torch.allclose(lrdm.kl(m, lv, per_dim=True), reference, atol=1e-12)
    assert torch.allclose(lrdm.kl(m, lv), reference.flatten(1).sum(1), atol=1e-12)
    assert torch.equal(lrdm.kl(torch.zeros(2, 3), torch.zeros(2, 3)), torch.zeros(2))   # q = prior
    assert lrdm.active_units(m, lv).shape == (4, 2, 2)
    assert not lrdm.active_units(torch.zeros(3, 4, 2, 2), torch.zeros(3, 4, 2, 2)).any()
    with pytest.raises(ValueError, match="mean and logvar"):
        lrdm.kl(m, lv[:2])


def test_prior_sample_shapes_and_determinism(model):
    a = lrdm.prior_sample(model, 3, generator=torch.Generator().manual_seed(1))
    b = lrdm.prior_sample(model, 3, generator=torch.Generator().manual_seed(1))
    assert a.shape == (3, 4, 2, 2) and a.dtype == model.dtype and torch.equal(a, b)
    assert not torch.equal(a, lrdm.prior_sample(model, 3, generator=torch.Generator().manual_seed(2)))
    with pytest.raises(ValueError, match="num must be a positive integer"):
        lrdm.prior_sample(model, 0)


def test_the_network_reads_r_at_every_level(model, digits):
    x, t = torch.randn(6, 1, 8, 8), torch.tensor(500)
    r1, r2 = lrdm.prior_sample(model, 6, generator=torch.Generator().manual_seed(0)), None
    with torch.no_grad():
        out1 = model.denoise(x, t, r1)
        r2 = r1.clone()
        r2[:, 0] += 1.0                                                   # change one channel of r
        out2 = model.denoise(x, t, r2)
        bound = model.bind(r1)(x, t).sample
    assert out1.shape == (6, 1, 8, 8) and (out1 - out2).abs().max() > 1e-4
    assert torch.equal(bound, out1)
    # each level's map reaches its block: the four widened blocks read 16 extra channels
    widened = [b.resnets[0] for b in model.unet.down_blocks] + [model.unet.mid_block.resnets[0]]
    assert all(isinstance(w, lrdm._WithMap) and w.block.conv1.in_channels == w.block.norm1.num_channels
               for w in widened)
    with pytest.raises(RuntimeError, match="needs its representation"):
        model.unet(x, t)


def test_dpm_encoder_is_exact_on_a_bound_representation(model, digits):
    """The book's samplers run unchanged on an LRDM: DPM-Encoder + decode reconstruct exactly. An
    x0-predictor's deterministic last step ignores x_t, so the exact code needs a stochastic last step
    (the encoder says so; see tests/test_encoder.py), hence ``set_alpha_to_one=False, steps_offset=1``."""
    sched = DDIMScheduler.from_config(model.scheduler.config, set_alpha_to_one=False, steps_offset=1)
    with torch.no_grad():
        mean, _ = lrdm.posterior(model, digits)
        cond = model.bind(mean)
        z = dpm_encode(cond, sched, digits, eta=1.0, num_inference_steps=10,
                       generator=torch.Generator().manual_seed(0))
        x = decode(cond, sched, z, eta=1.0)
    assert (x - digits).abs().max() <= 1e-5


def test_generate_and_reconstruct_are_deterministic_given_a_generator(model, digits):
    sched = _ddim(model)
    r = lrdm.prior_sample(model, 4, generator=torch.Generator().manual_seed(0))
    a = lrdm.generate(model, sched, r, eta=1.0, num_inference_steps=5, generator=torch.Generator().manual_seed(3))
    b = lrdm.generate(model, sched, r, eta=1.0, num_inference_steps=5, generator=torch.Generator().manual_seed(3))
    assert a.shape == (4, 1, 8, 8) and torch.equal(a, b) and a.abs().max() <= 1.0
    ra = lrdm.reconstruct(model, sched, digits, eta=0.5, num_inference_steps=5, generator=torch.Generator().manual_seed(0))
    rb = lrdm.reconstruct(model, sched, digits, eta=0.5, num_inference_steps=5, generator=torch.Generator().manual_seed(0))
    rc = lrdm.reconstruct(model, sched, digits, eta=0.5, num_inference_steps=5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(ra, rb) and not torch.equal(ra, rc)


def test_bad_inputs_are_rejected(model, digits):
    sched = _ddim(model)
    with pytest.raises(ValueError, match=r"r must have shape \(B, 4, 2, 2\)"):
        lrdm.generate(model, sched, torch.zeros(2, 3, 2, 2), eta=0.0, num_inference_steps=2)
    with pytest.raises(ValueError, match=r"x0 must have shape \(B, 1, 8, 8\)"):
        lrdm.posterior(model, torch.zeros(2, 1, 4, 4))
    with pytest.raises(ValueError, match="labels must be None"):
        lrdm.posterior(model, digits, torch.zeros(6, dtype=torch.long))
    with pytest.raises(ValueError, match="prediction_type='sample'"):
        from dpmlatent.diffusion import make_scheduler
        lrdm.generate(model, DDIMScheduler.from_config(make_scheduler().config), torch.zeros(1, 4, 2, 2),
                      eta=0.0, num_inference_steps=2)
    with pytest.raises(ValueError, match="representations for"):
        model.denoise(torch.zeros(3, 1, 8, 8), torch.tensor(1), torch.zeros(2, 4, 2, 2))


def test_class_conditional_variant_needs_and_reads_labels(digits):
    torch.manual_seed(0)
    cc = lrdm.LRDM(lrdm.LRDMConfig(r_channels=4, num_classes=10)).eval()
    y = torch.arange(6)
    with torch.no_grad():
        mean, _ = lrdm.posterior(cc, digits, y)
        x, t = torch.randn(6, 1, 8, 8), torch.tensor(300)
        a = cc.bind(mean, y)(x, t).sample
        b = cc.bind(mean, (y + 1) % 10)(x, t).sample
    assert (a - b).abs().max() > 1e-4
    with pytest.raises(ValueError, match=r"labels must be a \(6,\) integer tensor"):
        lrdm.posterior(cc, digits)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 9\]"):
        cc.bind(mean, torch.full((6,), 10))


def test_training_logs_kl_keeps_the_encoder_and_is_reproducible():
    images = data.handwritten_digits("train").images[:64]

    def run():
        torch.manual_seed(0)
        m = lrdm.LRDM(lrdm.LRDMConfig(r_channels=4, kl_weight=0.5))
        return m, lrdm.train_lrdm(m, images, steps=3, batch_size=8, progress=False)

    (m1, a), (_, b) = run(), run()
    assert set(a.history) == {"loss", "mse", "kl", "active"} and len(a.losses) == 3
    assert a.history["loss"] == pytest.approx([mse + 0.5 * k for mse, k in zip(a.history["mse"], a.history["kl"])],
                                              rel=1e-5)
    assert a.losses == b.losses
    assert all(torch.equal(p, q) for p, q in zip(a.model.state_dict().values(), b.model.state_dict().values()))
    # the returned model averages the network but keeps the trained encoder
    assert all(torch.equal(p, q) for p, q in zip(a.model.encoder.parameters(), m1.encoder.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(a.model.unet.parameters(), m1.unet.parameters()))
    assert not a.model.training
    with pytest.raises(ValueError, match="images must have shape"):
        lrdm.train_lrdm(m1, images[:, :, :4], steps=1)


def test_save_load_round_trip(tmp_path, model, digits):
    lrdm.save(model, tmp_path)
    loaded = lrdm.load(tmp_path)
    assert loaded.config == model.config and loaded.scheduler.config.prediction_type == "sample"
    stored = {k: v.half().float() for k, v in model.state_dict().items()}          # float16 on disk
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in stored.items())
    x, t, r = torch.randn(2, 1, 8, 8), torch.tensor(10), torch.randn(2, 4, 2, 2)
    with torch.no_grad():
        assert loaded.denoise(x, t, r).shape == (2, 1, 8, 8)
    assert lrdm.load(tmp_path, dtype=torch.float64).dtype == torch.float64


def test_switching_representation_follows_the_timestep(model):
    x = torch.randn(2, 1, 8, 8)
    r_a, r_b = torch.randn(2, 4, 2, 2), torch.randn(2, 4, 2, 2)
    view = model.bind(r_a, r_late=r_b, switch_at=400)
    with torch.no_grad():
        assert torch.equal(view(x, torch.tensor(401)).sample, model.denoise(x, torch.tensor(401), r_a))
        assert torch.equal(view(x, torch.tensor(400)).sample, model.denoise(x, torch.tensor(400), r_b))
        assert torch.equal(model.bind(r_a, r_late=r_b, switch_at=1000)(x, torch.tensor(999)).sample,
                           model.denoise(x, torch.tensor(999), r_b))             # tau = T: r_late everywhere
    with pytest.raises(ValueError, match="go together"):
        model.bind(r_a, r_late=r_b)
    with pytest.raises(ValueError, match=r"switch_at must be an integer timestep in \[0, 1000\]"):
        model.bind(r_a, r_late=r_b, switch_at=1001)
    with pytest.raises(ValueError, match="one timestep per call"):
        view(x, torch.tensor([1, 900]))


def test_reconstruction_scores_shapes_ranges_and_bad_draws(model, digits):
    from dpmlatent.classifier import ClassifierConfig, DigitClassifier

    torch.manual_seed(0)
    judge = DigitClassifier(ClassifierConfig(arch="mlp")).eval()
    sc = lrdm.reconstruction_scores(model, _ddim(model), digits, judge=judge, draws=3, num_inference_steps=4)
    assert sc.images.shape == (3, 6, 1, 8, 8)
    for v in (sc.mse, sc.ssim, sc.agree, sc.spread):
        assert v.shape == (6,)
    assert (sc.agree >= 0).all() and (sc.agree <= 1).all() and (sc.spread >= 0).all()
    # the per-image error is the mean over draws of each draw's error
    expect = (sc.images - digits).square().flatten(2).mean(2).mean(0)
    assert torch.allclose(sc.mse, expect)
    # draw k is reconstruct(..., generator seeded seed + k)
    first = lrdm.reconstruct(model, _ddim(model), digits, eta=0.0, num_inference_steps=4,
                             generator=torch.Generator().manual_seed(0))
    assert torch.equal(sc.images[0], first)
    with pytest.raises(ValueError, match="draws must be an integer >= 2"):
        lrdm.reconstruction_scores(model, _ddim(model), digits, judge=judge, draws=1)


def test_latent_prior_rebuild_standardises_the_lrdm_codes_and_samples_them(tmp_path):
    """Diff-AE's second stage for a shipped LRDM: build a few steps through the registry, reload,
    and check the standardisation against the codes it was fitted to."""
    from dpmlatent import latent_prior, train, zoo

    train.build("lrdm-kl1e-3-prior", steps=2, root=tmp_path, progress=False)
    prior = zoo.load("lrdm-kl1e-3-prior", root=tmp_path)
    model = zoo.load(prior.lrdm)
    r = latent_prior.representations(model, train.training_data("handwritten").images)
    assert r.shape[1:] == model.config.r_shape
    assert torch.allclose(prior.mean, r.mean(0)) and torch.allclose(prior.std, r.std(0).clamp_min(1e-6))
    assert torch.allclose(prior.unstandardise(prior.standardise(r)), r, atol=1e-5)
    a = prior.sample(3, num_inference_steps=4, generator=torch.Generator().manual_seed(0))
    b = prior.sample(3, num_inference_steps=4, generator=torch.Generator().manual_seed(0))
    assert a.shape == (3, *model.config.r_shape) and torch.equal(a, b)
    assert zoo.manifest("lrdm-kl1e-3-prior", root=tmp_path)["lrdm"] == "lrdm-kl1e-3"
    with pytest.raises(ValueError, match="num must be a positive integer"):
        prior.sample(0)
