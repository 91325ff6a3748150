"""Latent-space guidance: Langevin, the guided energy, checkpointed decoding, energies on images."""

import json

import pytest
import torch
from diffusers import DDIMScheduler

from dpmlatent.clip import clip_embed_images, load_clip
from dpmlatent.energies import classifier_energy, clip_energy, combine
from dpmlatent.guidance import diffusion_generator, langevin, latent_energy
from dpmlatent.latent import LatentCode, sample_latent


def _toy_generator():
    """A GAN-shaped G: (B, 32) Gaussian codes -> (B, 1, 8, 8) images in [-1, 1] (random weights)."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.Tanh(), torch.nn.Unflatten(1, (1, 8, 8))).eval()


def _code(batch=2, steps=5, seed=0):
    sched = DDIMScheduler(num_train_timesteps=100)
    z = sample_latent((batch, 1, 8, 8), sched, steps, 1.0, generator=torch.Generator().manual_seed(seed))
    return sched, z


def test_langevin_on_the_prior_alone_samples_a_standard_gaussian():
    # U(z) = ||z||^2 / 2: p = N(0, I). The chain z' = (1 - s/2) z + sqrt(s) n has stationary variance
    # 1 / (1 - s/4) (1.005 at s = 0.02); from z = 3 the mean decays as 3 (1 - s/2)^k: 1e-4 after 1000 steps.
    z0 = torch.full((8000, 2), 3.0, dtype=torch.float64)
    res = langevin(lambda z: 0.5 * z.pow(2).sum(1), z0, steps=1000, step_size=0.02,
                   generator=torch.Generator().manual_seed(0), progress=False)
    z = res.z
    assert z.shape == z0.shape and z.dtype == torch.float64
    assert z.mean(0).abs().max() < 0.04                      # SE 0.011
    assert (z.var(0) - 1 / (1 - 0.02 / 4)).abs().max() < 0.05  # SE 0.016
    assert abs(torch.corrcoef(z.T)[0, 1]) < 0.04
    assert res.energies.shape == (1001, 8000)
    assert res.energies[0].mean() == pytest.approx(9.0) and res.energies[-1].mean() == pytest.approx(1.0, abs=0.05)


def test_mala_removes_the_step_size_bias_and_rejects_runaways():
    # U(z) = ||z||^2 / 2 at s = 1: unadjusted Langevin settles at variance 1 / (1 - s/4) = 4/3, MALA at 1.
    u = lambda z: 0.5 * z.pow(2).sum(1)  # noqa: E731
    z0 = torch.randn(8000, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    runs = {m: langevin(u, z0, steps=200, step_size=1.0, generator=torch.Generator().manual_seed(1), metropolis=m,
                        progress=False) for m in (False, True)}
    assert (runs[False].z.var(0) - 4 / 3).abs().max() < 0.06 and runs[False].accepted is None
    assert (runs[True].z.var(0) - 1.0).abs().max() < 0.05                       # SE 0.016
    assert runs[True].accepted.shape == (200, 8000) and 0.5 < runs[True].acceptance < 0.95
    assert torch.equal(runs[True].energies[-1], u(runs[True].z))               # the trace is the chain's state
    tiny = langevin(u, z0[:100], steps=20, step_size=1e-4, generator=torch.Generator().manual_seed(1), metropolis=True,
                    progress=False)
    assert tiny.acceptance > 0.99
    # a sharp energy and a large step: unadjusted chains are thrown out and blow up; MALA rejects those moves
    quartic = lambda z: z.pow(4).sum(1)  # noqa: E731
    start = torch.full((16, 1), 2.0, dtype=torch.float64)
    blown = langevin(quartic, start, steps=10, step_size=0.5, generator=torch.Generator().manual_seed(2), progress=False)
    assert not torch.isfinite(blown.z).all() or blown.z.abs().max() > 1e6
    kept = langevin(quartic, start, steps=10, step_size=0.5, generator=torch.Generator().manual_seed(2),
                    metropolis=True, progress=False)
    assert torch.isfinite(kept.z).all() and kept.z.abs().max() <= 2.0
    with pytest.raises(TypeError, match="metropolis must be True or False"):
        langevin(u, z0, steps=1, step_size=0.1, metropolis=1)


def test_langevin_follows_the_energy_and_keeps_the_code_type():
    sched, z = _code()
    # A linear energy on the code: the stationary mean is shifted by -weight * direction.
    direction = torch.zeros(z.dim)
    direction[0] = 1.0
    u = latent_energy(lambda c: c.flatten(), lambda flat: flat @ direction, weight=2.0)
    res = langevin(u, z, steps=300, step_size=0.05, generator=torch.Generator().manual_seed(1), progress=False)
    assert isinstance(res.z, LatentCode) and res.z.timesteps.equal(z.timesteps)
    assert res.z.x_start[:, 0, 0, 0].mean() < -1.0           # pulled to -2 from N(0, 1)


def test_langevin_validation():
    u = lambda z: 0.5 * z.pow(2).sum(1)  # noqa: E731
    z0 = torch.zeros(4, 3)
    with pytest.raises(ValueError, match="step_size must be a number > 0"):
        langevin(u, z0, steps=5, step_size=0.0)
    with pytest.raises(ValueError, match="step_size must be a number > 0"):
        langevin(u, z0, steps=5, step_size=-1e-3)
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        langevin(u, z0, steps=0, step_size=0.1)
    with pytest.raises(ValueError, match=r"one energy per sample, shape \(4,\)"):
        langevin(lambda z: z.pow(2).sum(), z0, steps=1, step_size=0.1, progress=False)
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        langevin(lambda z: z.pow(2), z0, steps=1, step_size=0.1, progress=False)
    with pytest.raises(TypeError, match="z0 must be"):
        langevin(u, [0.0, 1.0], steps=1, step_size=0.1)
    with pytest.raises(ValueError, match="weight must be a number >= 0"):
        latent_energy(lambda z: z, lambda x: x.sum(1), weight=-1.0)


def test_gradients_flow_from_the_energy_to_every_part_of_the_code(tiny_unet):
    sched, z = _code()
    g = diffusion_generator(tiny_unet, sched, eta=1.0)
    u = latent_energy(g, lambda x: x.pow(2).mean((1, 2, 3)), weight=10.0)
    flat = z.flatten().requires_grad_(True)
    u(z.unflatten(flat)).sum().backward()
    grad = z.unflatten(flat.grad)
    prior_grad = z.unflatten(flat.detach())                   # gradient of ||z||^2 / 2 alone
    for part, prior in [(grad.x_start, prior_grad.x_start)] + list(zip(grad.noises, prior_grad.noises))[:-1]:
        assert (part - prior).abs().max() > 1e-6              # the energy reaches x_T and every noise that is used
    with pytest.raises(TypeError, match="LatentCode"):
        g(torch.zeros(2, 64))


def test_checkpointed_and_plain_gradients_agree(tiny_unet):
    sched, z = _code(steps=6)
    z, unet = z.to(torch.float64), tiny_unet.double()
    grads = []
    for checkpoint in (False, True):
        u = latent_energy(diffusion_generator(unet, sched, eta=1.0, checkpoint=checkpoint),
                          lambda x: x.pow(2).mean((1, 2, 3)), weight=1.0)
        flat = z.flatten().requires_grad_(True)
        u(z.unflatten(flat)).sum().backward()
        grads.append(flat.grad)
    assert torch.allclose(grads[0], grads[1], atol=1e-10, rtol=0)
    assert grads[0].abs().max() > 0


def test_classifier_energy_and_combine():
    from dpmlatent.classifier import DigitClassifier

    clf = DigitClassifier().eval()
    x = torch.rand(3, 1, 8, 8) * 2 - 1
    logp = torch.log_softmax(clf(x), 1)
    assert torch.allclose(classifier_energy(clf, 7)(x), -logp[:, 7])
    assert torch.allclose(classifier_energy(clf, torch.tensor([1, 2, 3]))(x), -logp[[0, 1, 2], [1, 2, 3]])
    both = combine((1.0, classifier_energy(clf, 7)), (0.5, classifier_energy(clf, 1)))
    assert torch.allclose(both(x), -logp[:, 7] - 0.5 * logp[:, 1])
    with pytest.raises(ValueError, match=r"class index in \[0, 9\]"):
        classifier_energy(clf, 10)
    with pytest.raises(TypeError, match="target must be"):
        classifier_energy(clf, "seven")
    with pytest.raises(ValueError, match="3 images"):
        classifier_energy(clf, torch.tensor([1, 2]))(x)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        classifier_energy(clf, 1)(x[0])
    with pytest.raises(ValueError, match="at least one"):
        combine()
    with pytest.raises(TypeError, match="pair"):
        combine(classifier_energy(clf, 1))


@pytest.fixture(scope="module")
def tiny_clip_folder(tmp_path_factory):
    """A random tiny open_clip model saved in open_clip's local-dir layout (config + safetensors)."""
    import open_clip
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("clip")
    cfg = {"model_cfg": {"embed_dim": 16, "vision_cfg": {"image_size": 8, "layers": 1, "width": 32, "patch_size": 4,
                                                         "head_width": 16},
                         "text_cfg": {"context_length": 8, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1}},
           "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}}
    (folder / "open_clip_config.json").write_text(json.dumps(cfg))
    torch.manual_seed(0)
    model = open_clip.create_model(f"local-dir:{folder}")
    save_file(model.state_dict(), str(folder / "open_clip_model.safetensors"))
    return folder, model.state_dict()


def test_load_clip_from_a_local_folder_and_clip_energy(tiny_clip_folder):
    folder, state = tiny_clip_folder
    model, tokenizer = load_clip(folder)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())   # the weights were loaded
    assert tokenizer(["a handwritten seven"]).shape == (1, 8)
    x = (torch.rand(4, 1, 8, 8) * 2 - 1).requires_grad_(True)
    e = clip_energy(model, tokenizer, "a handwritten seven")(x)
    assert e.shape == (4,) and ((0 <= e) & (e <= 2)).all()
    e.sum().backward()
    assert x.grad.abs().max() > 0
    # 1 - cos by its definition, on an image the model's own size (3 channels, no resize)
    img = clip_embed_images(model, x.detach())
    txt = torch.nn.functional.normalize(model.encode_text(tokenizer(["a bold typeset two"] * 4)), dim=-1)
    per_image = clip_energy(model, tokenizer, ["a bold typeset two"] * 4)(x.detach())
    assert torch.allclose(per_image, 1 - (img * txt).sum(-1), atol=1e-6)
    big = clip_embed_images(model, torch.rand(2, 3, 16, 16) * 2 - 1)             # resized to 8x8
    assert big.shape == (2, 16) and torch.allclose(big.norm(dim=-1), torch.ones(2), atol=1e-5)
    with pytest.raises(ValueError, match="2 prompts for 4 images"):
        clip_energy(model, tokenizer, ["a", "b"])(x)
    with pytest.raises(ValueError, match="prompts must be"):
        clip_energy(model, tokenizer, [])
    with pytest.raises(ValueError, match="1 or 3 channels"):
        clip_embed_images(model, torch.zeros(1, 2, 8, 8))


def test_guide_lowers_the_image_energy_and_records_it():
    from dpmlatent.guidance import guide

    gan = _toy_generator()
    target = torch.zeros(1, 1, 8, 8)
    energy = lambda x: (x - target).pow(2).mean((1, 2, 3))  # noqa: E731
    z0 = torch.randn(8, 32, generator=torch.Generator().manual_seed(0))
    out = guide(gan, energy, z0, weight=50.0, steps=40, step_size=0.02, generator=torch.Generator().manual_seed(0),
                progress=False)
    assert out.images.shape == (8, 1, 8, 8) and out.energies.shape == (41, 8)
    assert torch.allclose(out.energies[-1], energy(out.images), atol=1e-6)
    assert out.energies[-1].mean() < out.energies[0].mean()
    mala = guide(gan, energy, z0, weight=50.0, steps=40, step_size=0.02, generator=torch.Generator().manual_seed(0),
                 metropolis=True, progress=False)
    assert mala.energies.shape == (41, 8) and torch.allclose(mala.energies[-1], energy(mala.images), atol=1e-6)
    assert 0 < mala.result.acceptance <= 1 and mala.energies[-1].mean() < mala.energies[0].mean()
    with pytest.raises(ValueError, match="weight must be a number > 0"):
        guide(gan, energy, z0, weight=0.0, steps=1, step_size=0.1)


def test_coverage_experiment_chains_table_and_diversity():
    from dpmlatent.classifier import DigitClassifier
    from dpmlatent.coverage import CoverageModel, coverage_experiment, format_coverage_table, mean_pairwise_distance
    from dpmlatent.energies import classifier_energy

    a = torch.zeros(3, 1, 2, 2)
    a[1] += 1.0
    a[2] -= 1.0                                    # distances 2, 2, 4 -> mean 8/3
    assert mean_pairwise_distance(a) == pytest.approx(8 / 3)
    assert mean_pairwise_distance(a[:1]) != mean_pairwise_distance(a[:1])   # nan
    torch.manual_seed(0)
    gan, judge = _toy_generator(), DigitClassifier().eval().requires_grad_(False)
    codes = lambda seed: torch.randn(6, 32, generator=torch.Generator().manual_seed(seed))  # noqa: E731
    runs = coverage_experiment({"gan": CoverageModel(gan, codes, 0.01, 4)}, {"clf": (2.0, classifier_energy(judge, 7))},
                               seeds=[0, 1, 2], progress=False)
    c = runs["gan", "clf"]
    assert (c.model, c.energy_name, c.num_chains, c.seeds, c.dim, c.steps) == ("gan", "clf", 18, 3, 32, 4)
    assert c.energy.shape == c.sq_norm.shape == (5, 18) and c.images.shape == c.before.shape == (18, 1, 8, 8)
    z0 = torch.cat([codes(s) for s in (0, 1, 2)])
    assert torch.allclose(c.sq_norm[0], z0.pow(2).sum(1) / 32, atol=1e-6)   # ||z||^2 / d of the start codes, seed-major
    # one seed per batch against all 18 in one: another summation order (1e-8 apart near 0 on some kernel paths)
    assert torch.allclose(c.before, gan(z0), atol=1e-6)
    # the first seed's chains are what guide() gives for that seed alone
    from dpmlatent.guidance import guide
    one = guide(gan, classifier_energy(judge, 7), codes(0), weight=2.0, steps=4, step_size=0.01,
                generator=torch.Generator().manual_seed(0), progress=False)
    assert torch.equal(one.images, c.images[:6])
    # all seeds in one batch: each seed's block gets its own noise, so the chains are the same (on the grid)
    grid_runs = [coverage_experiment({"gan": CoverageModel(gan, codes, 0.01, 4, batch_seeds=b)},
                                     {"clf": (2.0, classifier_energy(judge, 7))}, seeds=[0, 1, 2], grid=2.0 ** -8,
                                     progress=False)["gan", "clf"] for b in (False, True)]
    assert torch.equal(grid_runs[0].codes, grid_runs[1].codes)
    # ... and their images equal up to the generator's summation order in a batch of 6 or of 18
    assert torch.allclose(grid_runs[0].images, grid_runs[1].images, atol=1e-6)
    assert torch.allclose(grid_runs[0].energy, grid_runs[1].energy, atol=1e-6)
    table = format_coverage_table([c], {"judge": judge, "other": judge}, 7, threshold=0.1)
    text = str(table)
    assert text.count("\n") == 1 and "<table" in table._repr_html_() and "6 x 3" in text
    assert "success (judge)" in text and "success (other)" in text
    with pytest.raises(ValueError, match="seeds must be"):
        coverage_experiment({"gan": CoverageModel(gan, codes, 0.01, 4)}, {"clf": (2.0, classifier_energy(judge, 7))},
                            seeds=[0, 0], progress=False)
    with pytest.raises(TypeError, match="CoverageModel"):
        coverage_experiment({"gan": (gan, codes, 0.01)}, {"clf": (2.0, classifier_energy(judge, 7))}, seeds=[0],
                            progress=False)
    with pytest.raises(ValueError, match="judges"):
        format_coverage_table([c], {}, 7)


def test_stored_chains_round_trip_decode_and_verify(tmp_path, tiny_unet):
    """save_chains / load_chains keep codes and traces exactly; decode_chains gives back the images of the
    run (a GAN's tensor codes and a diffusion model's LatentCode); verify_chains re-runs a prefix
    exactly and notices a tampered trace; bad input is refused by name."""
    from dpmlatent.classifier import DigitClassifier
    from dpmlatent.coverage import (CoverageModel, coverage_experiment, decode_chains, load_chains, save_chains,
                                    verify_chains)
    from dpmlatent.energies import classifier_energy

    gan, judge = _toy_generator().double(), DigitClassifier().eval().requires_grad_(False).double()
    sched = DDIMScheduler(num_train_timesteps=100)
    gan_codes = lambda s: torch.randn(4, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(s))  # noqa
    models = {
        "gan": CoverageModel(gan, gan_codes, 0.01, 4),
        "gan, batched": CoverageModel(gan, gan_codes, 0.01, 4, batch_seeds=True),
        "diffusion": CoverageModel(diffusion_generator(tiny_unet.double(), sched, eta=1.0, checkpoint=False),
                                   lambda s: sample_latent((3, 1, 8, 8), sched, 3, 1.0, dtype=torch.float64,
                                                           generator=torch.Generator().manual_seed(s)), 0.05, 4)}
    energies = {"clf": (2.0, classifier_energy(judge, 7))}
    runs = coverage_experiment(models, energies, seeds=[0, 1], grid=2.0 ** -20, progress=False)
    with pytest.raises(ValueError, match="rebuild"):
        save_chains(runs, tmp_path, rebuild=" ")
    with pytest.raises(ValueError, match="every"):
        save_chains(runs, tmp_path, rebuild="make it", every=3)
    stored = load_chains(save_chains(runs, tmp_path, rebuild="make it", every=2))
    assert list(stored) == list(runs)
    assert json.loads((tmp_path / "run.json").read_text())["rebuild"] == "make it"
    for k, c in runs.items():
        s = stored[k]
        assert (s.model, s.energy_name, s.weight, s.step_size, s.steps, s.dim, s.seeds) == \
            (c.model, c.energy_name, c.weight, c.step_size, c.steps, c.dim, c.seeds)
        assert torch.equal(s.codes, c.codes) and torch.equal(s.energy, c.energy[::2].float().double())
        assert s.energy.dtype == torch.float64 and s.images.numel() == 0
    decoded = decode_chains(stored, models, seeds=[0, 1])
    for k, c in runs.items():
        assert torch.equal(decoded[k].images, c.images) and torch.equal(decoded[k].before, c.before)
    check = verify_chains(stored, models, energies, seeds=[0, 1], steps=2, grid=2.0 ** -20)
    assert check == {k: 0.0 for k in runs}
    stored["gan", "clf"].energy[1, 0] += 1e-3 * max(1.0, float(stored["gan", "clf"].energy[1, 0].abs()))
    assert verify_chains(stored, models, energies, seeds=[0, 1], steps=2, grid=2.0 ** -20)["gan", "clf"] > 5e-4
    chains = verify_chains(stored, models, energies, seeds=[0, 1], steps=2, grid=2.0 ** -20, per_chain=True)
    assert chains["gan", "clf"].shape == (4,) and chains["gan", "clf"][0] > 5e-4 and (chains["gan", "clf"][1:] == 0).all()
    with pytest.raises(TypeError, match="per_chain must be"):
        verify_chains(stored, models, energies, seeds=[0, 1], steps=2, per_chain=1)
    with pytest.raises(ValueError, match="multiple"):
        verify_chains(stored, models, energies, seeds=[0, 1], steps=3)
    with pytest.raises(ValueError, match="steps must be an integer"):
        verify_chains(stored, models, energies, seeds=[0, 1], steps=5)
    with pytest.raises(ValueError, match="must include"):
        verify_chains(stored, {"gan": models["gan"]}, energies, seeds=[0, 1], steps=2)
    with pytest.raises(ValueError, match="seeds must list"):
        decode_chains(stored, models, seeds=[0])
    raw = (tmp_path / "chains.safetensors").read_bytes()
    (tmp_path / "chains.safetensors").write_bytes(raw[:-1] + bytes([raw[-1] ^ 1]))
    with pytest.raises(ValueError, match="sha256"):
        load_chains(tmp_path)
    with pytest.raises(FileNotFoundError, match="rebuild command"):
        load_chains(tmp_path / "nothing")


def test_class_coverage_names_its_experiment():
    from dpmlatent import class_coverage as cc

    assert cc.energy_names("GAN, 2% sevens") == ("classifier", "CLIP")
    assert cc.energy_names("diffusion, all digits") == ("classifier",)
    with pytest.raises(ValueError, match="model must be one of"):
        cc.energy_names("vae")
    m = cc.diffusion_model("ddpm-handwritten-rare")
    z = m.codes(0)
    assert (m.step_size, m.steps, m.batch_seeds, z.batch_size, z.dim) == (0.05, 80, False, cc.N, 704)
    assert z.x_start.dtype == torch.float64 and torch.equal(m.codes(0).flatten(), z.flatten())
    g = cc.gan_model("gan-handwritten-rare")
    assert g.batch_seeds and g.codes(1).shape[0] == cc.N and g.codes(1).dtype == torch.float64
    e = cc.energies()
    assert {k: w for k, (w, _) in e.items()} == cc.WEIGHTS
    x = torch.zeros(2, 1, 8, 8, dtype=torch.float64)
    assert all(fn(x).shape == (2,) and fn(x).dtype == torch.float64 for _, fn in e.values())


def test_success_gap_and_rarity_gap():
    from dpmlatent.coverage import rarity_gap, success_gap
    from dpmlatent.evidence import difference_of_shares

    a = torch.tensor([True] * 30 + [False] * 18)
    b = torch.tensor([True] * 10 + [False] * 38)
    gap = success_gap(a, b, seeds=3)
    ref = difference_of_shares(30, 48, 10, 48)
    assert (gap.estimate, gap.low, gap.high) == (ref.estimate, ref.low, ref.high)
    assert (gap.n, gap.seeds) == (16, 3) and gap.resolution == pytest.approx(0.5 / 48 ** 0.5)
    # difference of differences: model a gains 20 of 48 when the class is rare, model b loses 10: (20 + 10) / 48
    g = torch.Generator().manual_seed(0)
    a_full = torch.rand(48, generator=g) < 0.3
    a_rare = a_full.clone()
    a_rare[torch.nonzero(~a_full)[:20, 0]] = True
    b_full = torch.rand(48, generator=g) < 0.6
    b_rare = b_full.clone()
    b_rare[torch.nonzero(b_full)[:10, 0]] = False
    dod = rarity_gap(a_full, a_rare, b_full, b_rare, seeds=3)
    assert dod.estimate == pytest.approx(30 / 48) and dod.low > 0.3 and dod.high <= 1.0 and dod.seeds == 3
    same = rarity_gap(a_full, a_full, b_full, b_full)
    assert same.estimate == 0.0
    with pytest.raises(ValueError, match="paired"):
        rarity_gap(a_full, a_rare[:10], b_full, b_rare)
    with pytest.raises(ValueError, match="bool"):
        success_gap(a.double(), b)


def test_plateau_tells_a_settled_trace_from_a_drifting_one():
    from dpmlatent.guidance import plateau

    g = torch.Generator().manual_seed(0)
    noise = 0.05 * torch.randn(201, 64, generator=g, dtype=torch.float64)
    settled = 1.0 + 4.0 * torch.exp(-torch.arange(201.0, dtype=torch.float64) / 10)[:, None] + noise
    drifting = 1.0 + 4.0 * torch.exp(-torch.arange(201.0, dtype=torch.float64) / 80)[:, None] + noise
    p = plateau(settled)
    assert p.plateaued and p.window == 50 and p.drift.contains(0.0) and p.level == pytest.approx(1.0, abs=0.01)
    q = plateau(drifting)
    assert not q.plateaued and q.drift.high < 0                    # still falling
    # too noisy to bound the drift: not shown settled either
    assert not plateau(1.0 + 2.0 * torch.randn(21, 3, generator=g, dtype=torch.float64), window=5).plateaued
    # an energy driven towards 0: measured against its whole change (4), not its small final level (0.02)
    energy = 0.02 + 4.0 * torch.exp(-torch.arange(201.0, dtype=torch.float64) / 10)[:, None] + noise
    assert not plateau(energy).plateaued and plateau(energy, scale="change").plateaued
    with pytest.raises(ValueError, match="scale"):
        plateau(settled, scale="level-ish")
    with pytest.raises(ValueError, match="window"):
        plateau(settled, window=150)
    with pytest.raises(ValueError, match="tolerance"):
        plateau(settled, tolerance=0.0)
    with pytest.raises(ValueError, match="trace"):
        plateau(settled[:, 0])


def test_langevin_grid_makes_a_chaotic_chain_reproducible():
    """A sharp energy makes the chain chaotic: a 1e-13 change of the start (the size of a
    difference between two CPUs' kernels in float64) grows to O(1) in 60 steps. Rounding the
    code to a grid after every step wipes it out, and every iterate lies on the grid."""
    u = lambda z: 0.5 * z.pow(2).sum(1) + torch.sin(10 * z).sum(1)  # noqa: E731
    z0 = torch.randn(16, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    nudged = z0 + 1e-13

    def run(z, grid):
        return langevin(u, z, steps=60, step_size=0.05, generator=torch.Generator().manual_seed(1), grid=grid,
                        progress=False).z

    assert (run(z0, None) - run(nudged, None)).abs().max() > 1e-2
    a, b = run(z0, 2.0 ** -20), run(nudged, 2.0 ** -20)
    assert torch.equal(a, b)
    assert torch.equal(a, torch.round(a * 2 ** 20) / 2 ** 20)
    with pytest.raises(ValueError, match="grid"):
        langevin(u, z0, steps=1, step_size=0.1, grid=0.0, progress=False)
    with pytest.raises(ValueError, match="divides the batch"):
        langevin(u, z0, steps=1, step_size=0.1, generator=[torch.Generator()] * 3, progress=False)


def test_settling_sweep_reports_each_step_size():
    from dpmlatent.classifier import DigitClassifier
    from dpmlatent.coverage import CoverageModel, settling_sweep
    from dpmlatent.energies import classifier_energy

    torch.manual_seed(0)
    gan, judge = _toy_generator(), DigitClassifier().eval().requires_grad_(False)
    codes = lambda seed: torch.randn(8, 32, generator=torch.Generator().manual_seed(seed))  # noqa: E731
    table, runs = settling_sweep(CoverageModel(gan, codes, 1.0, 1), 2.0, classifier_energy(judge, 7),
                                 step_sizes=[0.01, 0.05], steps=8, seed=9, judge=judge, target=7, threshold=0.1)
    assert set(runs) == {0.01, 0.05} and runs[0.05].steps == 8 and runs[0.05].step_size == 0.05
    assert str(table).count("\n") == 2 and "settled" in str(table)
    with pytest.raises(ValueError, match="step_sizes"):
        settling_sweep(CoverageModel(gan, codes, 1.0, 1), 2.0, classifier_energy(judge, 7), step_sizes=[],
                       steps=8, seed=9, judge=judge, target=7)


def test_target_gap_and_target_rarity_gap_work_over_targets():
    from dpmlatent.coverage import per_target_share, target_gap, target_rarity_gap

    targets = torch.arange(6).repeat(4)                  # 6 targets, 4 chains each, target-interleaved
    # model a hits targets 0-2 always and 3-5 never; model b hits target 0 only half the time, nothing else
    a = targets < 3
    b = (targets == 0) & (torch.arange(24) < 12)
    share_a = per_target_share(a, targets, range(6))
    assert share_a.tolist() == [1, 1, 1, 0, 0, 0]
    assert per_target_share(b, targets, [0, 1]).tolist() == [0.5, 0.0]
    gap = target_gap(a, b, targets, range(3))
    assert gap.estimate == pytest.approx((0.5 + 1 + 1) / 3) and (gap.n, gap.seeds) == (3, 4)
    assert gap.resolution == pytest.approx(0.5 / 12 ** 0.5)
    assert target_gap(a, a, targets, range(6)).estimate == 0.0
    rg = target_rarity_gap(a, b, targets, rare=[1, 2], common=[3, 4, 5])
    assert rg.estimate == pytest.approx(1.0) and rg.seeds == 4
    from dpmlatent.evidence import Verdict, verdict_table
    table = str(verdict_table([Verdict("a beats b", "success", "judge", gap), Verdict("more so", "gap", "judge", rg)]))
    assert "3 x 4 chains" in table and "2 x 4 chains" in table and "seeds" not in table
    with pytest.raises(ValueError, match="at least 2"):
        target_gap(a, b, targets, [0])
    with pytest.raises(ValueError, match="no chain was aimed at target 9"):
        per_target_share(a, targets, [9])
    with pytest.raises(ValueError, match="no target twice"):
        target_rarity_gap(a, b, targets, rare=[1, 2], common=[2, 3])
    with pytest.raises(ValueError, match="targets must be"):
        per_target_share(a, targets[:5], [0])
