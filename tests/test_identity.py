"""dpmlatent.identity (typeface embedding, verification) and data.font_individuals."""

import dataclasses

import pytest
import torch

from dpmlatent import data
from dpmlatent.identity import (IdentityConfig, IdentityEmbedding, centre_pairs, reference_centres, roc_auc,
                                threshold_at_far, train_identity, verification_pairs)


def test_font_individuals_are_deterministic_and_shaped():
    a = data.font_individuals(resolution=8, per_digit=1)
    assert a.images.shape == (len(data.FONT_FACES) * len(data.FONT_VARIANTS) * 10, 1, 8, 8)
    assert len(a.names) == len(set(a.names)) == len(data.FONT_FACES) * len(data.FONT_VARIANTS)
    assert a.images.min() >= -1 and a.images.max() <= 1
    assert torch.equal(torch.bincount(a.individuals), torch.full((len(a.names),), 10))
    assert torch.equal(a.labels[:10], torch.arange(10))
    b = data.font_individuals(resolution=16, per_digit=1)
    assert b.images.shape[2:] == (16, 16) and torch.equal(a.individuals, b.individuals)
    with pytest.raises(ValueError, match="resolution"):
        data.font_individuals(resolution=12)
    with pytest.raises(ValueError, match="per_digit"):
        data.font_individuals(per_digit=0)


def test_font_glyphs_draw_each_individual_from_its_own_stream():
    a = data.font_glyphs([3, 7], 2, seed=5)
    b = data.font_glyphs([7], 2, seed=5)
    assert torch.equal(a.images[a.individuals == 7], b.images)            # independent of the others drawn
    assert not torch.equal(b.images, data.font_glyphs([7], 2, seed=6).images)
    c = data.font_glyphs([3, 7], [1, 3])
    assert torch.equal(torch.bincount(c.individuals, minlength=8)[[3, 7]], torch.tensor([10, 30]))
    for bad in ([], [3, 3], [110], [-1]):
        with pytest.raises(ValueError, match="individuals must be"):
            data.font_glyphs(bad, 1)
    with pytest.raises(ValueError, match="per_digit"):
        data.font_glyphs([1, 2], [1])


def test_font_split_is_disjoint_by_face_and_zipf_data_follow_it():
    s = data.font_split()
    parts = [set(s.embedding), set(s.generator), set(s.held_out)]
    assert sum(map(len, parts)) == len(set().union(*parts)) == len(data.font_names())
    faces = [{i // len(data.FONT_VARIANTS) for i in p} for p in parts]
    assert not (faces[0] & faces[1] or faces[0] & faces[2] or faces[1] & faces[2])     # split by face
    assert (len(s.embedding), len(s.held_out)) == (50, 20)
    counts = s.per_digit()
    assert counts[0] == data.ZIPF_TOP and counts[-1] == 1 and list(counts) == sorted(counts, reverse=True)
    assert data.font_split(seed=1) != s and data.font_split() == s
    z = data.zipf_fonts()
    names = data.font_names()
    per_individual = {n: z.styles.count(n) for n in set(z.styles)}
    assert per_individual == {names[i]: 10 * c for i, c in zip(s.generator, counts)}
    assert z.images.shape == (10 * sum(counts), 1, 8, 8) and set(z.labels.tolist()) == set(range(10))
    e = data.embedding_fonts()
    assert set(e.labels.tolist()) == set(s.embedding)                 # labelled by individual
    assert not torch.equal(e.images, data.embedding_fonts("test").images)
    with pytest.raises(ValueError, match="held_out_faces"):
        data.font_split(held_out_faces=0)
    with pytest.raises(ValueError, match="leave at least one"):
        data.font_split(embedding_faces=18, held_out_faces=4)


def test_embedding_gives_unit_vectors_and_checks_its_input():
    model = IdentityEmbedding(IdentityConfig(resolution=8, dim=16, width=4))
    e = model(torch.rand(5, 1, 8, 8) * 2 - 1)
    assert e.shape == (5, 16) and torch.allclose(e.norm(dim=1), torch.ones(5), atol=1e-6)
    with pytest.raises(ValueError, match="x must have shape"):
        model(torch.zeros(5, 1, 16, 16))
    with pytest.raises(ValueError, match="dim must be"):
        IdentityConfig(dim=8)
    with pytest.raises(ValueError, match="resolution"):
        IdentityConfig(resolution=32)
    with pytest.raises(ValueError, match="arch"):
        IdentityConfig(arch="vit")
    mlp = IdentityEmbedding(IdentityConfig(dim=16, width=4, arch="mlp"))
    assert torch.allclose(mlp(torch.zeros(2, 1, 8, 8) + 0.3).norm(dim=1), torch.ones(2), atol=1e-6)


def test_roc_auc_against_brute_force_and_ties():
    assert roc_auc(torch.tensor([2.0, 3.0]), torch.tensor([0.0, 1.0])) == 1.0
    assert roc_auc(torch.tensor([0.0, 1.0]), torch.tensor([2.0, 3.0])) == 0.0
    assert roc_auc(torch.tensor([1.0]), torch.tensor([1.0])) == 0.5
    g = torch.Generator().manual_seed(0)
    pos, neg = torch.randint(0, 5, (40,), generator=g).double(), torch.randint(0, 5, (30,), generator=g).double()
    brute = ((pos[:, None] > neg[None]).double() + 0.5 * (pos[:, None] == neg[None]).double()).mean()
    assert roc_auc(pos, neg) == pytest.approx(float(brute), abs=1e-12)
    with pytest.raises(ValueError, match="non-empty"):
        roc_auc(torch.tensor([]), neg)


def test_threshold_at_far_accepts_at_most_that_share_of_negatives():
    neg = torch.linspace(0, 1, 1001)
    for far in (0.001, 0.01, 0.1, 0.5):
        t = threshold_at_far(neg, far)
        assert (neg > t).double().mean() <= far + 1e-12
        assert (neg >= t).double().mean() > far - 1e-3            # and not needlessly strict
    with pytest.raises(ValueError, match="far must be"):
        threshold_at_far(neg, 0.0)


def test_verification_pairs_count_every_pair_once():
    e = torch.nn.functional.normalize(torch.randn(6, 16, generator=torch.Generator().manual_seed(0)), dim=1)
    ids = torch.tensor([0, 0, 1, 1, 1, 2])
    same, diff = verification_pairs(e, ids)
    assert len(same) == 1 + 3 and len(diff) == 15 - 4
    with pytest.raises(ValueError, match="embeddings must be"):
        verification_pairs(e, ids[:5])
    digits = torch.tensor([0, 1, 0, 1, 0, 0])
    same, diff = verification_pairs(e, ids, digits)       # same-digit pairs: (0,2) (0,4) (0,5) (2,4) (2,5) (4,5) (1,3)
    assert len(same) == 1 and len(diff) == 6
    assert torch.allclose(same, (e[2] @ e[4]).reshape(1))


def test_reference_centres_and_centre_pairs():
    e = torch.eye(4)[[0, 0, 1, 2, 3, 3]]                   # embeddings are the rows themselves
    embed = lambda x: x.flatten(1)
    ids, digits = torch.tensor([0, 0, 1, 1, 2, 2]), torch.tensor([5, 5, 5, 6, 5, 6])
    c = reference_centres(embed, e, ids, digits, 3)
    assert c.shape == (3, 10, 4) and torch.equal(c[0, 5], torch.eye(4)[0]) and torch.equal(c[1, 6], torch.eye(4)[2])
    assert torch.equal(c[0, 6], torch.zeros(4))
    probes = torch.eye(4)[[0, 3]]
    same, diff = centre_pairs(probes, torch.tensor([0, 2]), torch.tensor([5, 6]), c, [0, 1, 2])
    assert same.tolist() == [1.0, 1.0] and sorted(diff.tolist()) == [0.0, 0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="candidates"):
        centre_pairs(probes, torch.tensor([0, 2]), torch.tensor([5, 6]), c, [0, 1])
    with pytest.raises(ValueError, match="individuals must be in"):
        reference_centres(embed, e, ids, digits, 2)


def test_train_identity_separates_easy_individuals_and_rejects_bad_input():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([-0.8, 0.0, 0.8])
    ids = torch.arange(3).repeat_interleave(40)
    images = (centres[ids][:, None, None, None] + 0.1 * torch.randn(120, 1, 8, 8, generator=g)).clamp(-1, 1)
    model = IdentityEmbedding(IdentityConfig(resolution=8, dim=16, width=4))
    torch.manual_seed(0)
    result = train_identity(model, images, ids, steps=60, batch_size=32, lr=3e-3, progress=False)
    assert result.model is model and len(result.losses) == 60
    with torch.no_grad():
        same, diff = verification_pairs(model(images), ids)
    assert roc_auc(same, diff) > 0.95
    with pytest.raises(ValueError, match="at least two"):
        train_identity(model, images, torch.zeros(120, dtype=torch.long), steps=1, progress=False)
    with pytest.raises(ValueError, match="margin"):
        train_identity(model, images, ids, steps=1, margin=1.0, progress=False)
    with pytest.raises(ValueError, match="individuals must be"):
        train_identity(model, images, ids.float(), steps=1, progress=False)


def test_identity_energy_value_and_gradient_on_known_inputs():
    from dpmlatent.energies import identity_energy

    class Fixed(torch.nn.Module):            # embedding = the normalised first two pixels
        def forward(self, x):
            return torch.nn.functional.normalize(x.flatten(1)[:, :2], dim=1)

    refs = torch.zeros(2, 1, 8, 8)
    refs[:, 0, 0, 0] = 1.0                   # every reference embeds to (1, 0)
    energy = identity_energy(Fixed(), refs)
    x = torch.zeros(3, 1, 8, 8)
    x[0, 0, 0, 0] = 1.0                      # (1, 0): energy 0
    x[1, 0, 0, 1] = 1.0                      # (0, 1): energy 1
    x[2, 0, 0, 0] = -1.0                     # (-1, 0): energy 2
    assert torch.allclose(energy(x), torch.tensor([0.0, 1.0, 2.0]))
    # gradient at (a, b): E = 1 - a / sqrt(a^2 + b^2); dE/db = a b / (a^2 + b^2)^(3/2)
    y = torch.zeros(1, 1, 8, 8)
    y[0, 0, 0, 0], y[0, 0, 0, 1] = 0.6, 0.8
    y.requires_grad_(True)
    energy(y).sum().backward()
    assert float(y.grad[0, 0, 0, 1]) == pytest.approx(0.6 * 0.8, abs=1e-6)
    assert float(y.grad[0, 0, 0, 0]) == pytest.approx(-0.8 * 0.8, abs=1e-6)
    with pytest.raises(ValueError, match="references must be"):
        identity_energy(Fixed(), torch.zeros(0, 1, 8, 8))
    # several targets in one batch: image b is compared with target b % T
    other = torch.zeros(1, 1, 8, 8)
    other[0, 0, 0, 1] = 1.0                                       # embeds to (0, 1)
    both = identity_energy(Fixed(), [refs, other])
    x2 = torch.cat([x[:1], x[:1], x[1:2], x[1:2]])               # (1,0) (1,0) (0,1) (0,1)
    assert torch.allclose(both(x2), torch.tensor([0.0, 1.0, 1.0, 0.0]))
    with pytest.raises(ValueError, match="multiple of the number of targets"):
        both(x)
    with pytest.raises(ValueError, match="at least one"):
        identity_energy(Fixed(), [])


def test_identity_matches_needs_a_legible_digit_and_the_target_identity():
    from dpmlatent.identity import identity_matches

    class Judge(torch.nn.Module):                # reads digit 3 when pixel (0, 0) is inked, else is unsure
        def __init__(self):
            super().__init__()
            self.unused = torch.nn.Parameter(torch.zeros(1))

        def features(self, x):
            return (x[:, 0, 0, 0] > 0).float()[:, None]

        def head(self, sure):
            return sure * 20 * torch.nn.functional.one_hot(torch.full((len(sure),), 3), 10).float()

    embed = lambda x: torch.nn.functional.normalize(x.flatten(1)[:, 1:3], dim=1)
    centres = torch.zeros(2, 10, 2)
    centres[0, 3] = torch.tensor([1.0, 0.0])
    centres[1, 3] = torch.tensor([0.0, 1.0])
    x = -torch.ones(3, 1, 8, 8)
    x[:2, 0, 0, 0] = 1.0                          # images 0 and 1 legible, image 2 not
    x[:, 0, 0, 1], x[:, 0, 0, 2] = 1.0, 0.0        # every image embeds to (1, 0): individual 0's direction
    ok = identity_matches(x, torch.tensor([0, 1, 0]), digit_judge=Judge(), embed=embed, centres=centres,
                          threshold=0.9)
    assert ok.tolist() == [True, False, False]
    with pytest.raises(ValueError, match="targets must be"):
        identity_matches(x, torch.tensor([0.0, 1.0, 0.0]), digit_judge=Judge(), embed=embed, centres=centres,
                         threshold=0.9)
    with pytest.raises(ValueError, match="threshold"):
        identity_matches(x, torch.tensor([0, 1, 0]), digit_judge=Judge(), embed=embed, centres=centres, threshold=2.0)


def test_identity_coverage_buckets_targets_and_distances():
    from dpmlatent import identity_coverage as ic

    split = data.font_split()
    b = ic.buckets(split)
    assert tuple(b) == ic.BUCKETS and all(len(v) == 8 for v in b.values())
    assert b["frequent"] == split.generator[:8]
    ranks = [split.generator.index(i) + 1 for i in b["rare"]]
    assert ranks == list(range(26, 41, 2))
    assert set(b["held-out"]) <= set(split.held_out)
    assert len({i // len(data.FONT_VARIANTS) for i in b["held-out"]}) == 4          # every held-out face
    with pytest.raises(ValueError, match="per_bucket"):
        ic.buckets(split, per_bucket=11)
    refs = ic.references([3, 50])
    assert len(refs) == 2 and refs[0].shape == (10, 1, 8, 8) and refs[0].dtype == torch.float64
    t = ic.chain_targets([4, 5, 6], 6, 2)
    assert t.tolist() == [4, 5, 6] * 4
    with pytest.raises(ValueError, match="multiple"):
        ic.chain_targets([4, 5, 6], 4, 1)
    train = torch.zeros(3, 1, 2, 2)
    train[1] = 1.0
    x = torch.full((2, 1, 2, 2), 0.75)
    x[1] = 0.0
    assert ic.nearest_distance(x, train).tolist() == [0.5, 0.0]
    imgs = torch.stack([torch.zeros(1, 2, 2), torch.ones(1, 2, 2), torch.zeros(1, 2, 2), torch.ones(1, 2, 2) * 5])
    div = ic.within_target_diversity(imgs, torch.tensor([0, 0, 1, 2]))
    assert div.tolist() == [2.0]                       # only target 0 has two images; their distance is 2


def test_identity_calibration_holds_its_false_accept_rate():
    from dpmlatent import identity_coverage as ic
    from dpmlatent.zoo import load

    judge = load("identity-fonts-judge")
    cal = ic.calibrate(judge, far=0.05)
    assert cal.centres.shape == (110, 10, judge.config.dim)
    assert torch.allclose(cal.centres.norm(dim=2), torch.ones(110, 10), atol=1e-5)
    assert cal.n_same == 20 * 10 * 2 and cal.n_different == cal.n_same * 19
    assert 0.3 < cal.tar <= 1.0 and -1.0 < cal.threshold < 1.0
    assert ic.calibrate(judge, far=0.01).threshold >= cal.threshold


def test_verification_summary_matches_its_parts():
    from dpmlatent.identity import verification_summary

    torch.manual_seed(0)
    model = IdentityEmbedding(IdentityConfig(dim=16, width=4)).eval()
    g = data.font_glyphs([0, 5, 10], 2, seed=4)
    v = verification_summary(model, g.images, g.individuals, g.labels, far=0.05)
    with torch.no_grad():
        same, diff = verification_pairs(model(g.images), g.individuals, g.labels)
    assert torch.equal(v.same, same) and torch.equal(v.different, diff)
    assert v.auc == roc_auc(same, diff) and v.threshold == threshold_at_far(diff, 0.05)
    assert v.tar == float((same > v.threshold).double().mean())
    with pytest.raises(ValueError, match="far"):
        verification_summary(model, g.images, g.individuals, g.labels, far=1.5)


def test_identity_coverage_settings_reject_bad_values():
    from dpmlatent import identity_coverage as ic

    with pytest.raises(ValueError, match="chains"):
        ic.Settings(chains=30)
    with pytest.raises(ValueError, match="seeds"):
        ic.Settings(seeds=(1, 1))
    with pytest.raises(ValueError, match="every"):
        ic.Settings(gan_steps=4001)
    with pytest.raises(ValueError, match="weight"):
        ic.Settings(weight=0)
    with pytest.raises(ValueError, match="diffusion_step"):
        ic.Settings(diffusion_step=-0.1)
    with pytest.raises(ValueError, match="seeds"):
        ic.Settings(seeds=(-1,))
    for bad in (5, True, -1):                       # adjusted from step 0 or from a restart, nothing else
        with pytest.raises(ValueError, match="gan_metropolis_from"):
            ic.Settings(gan_steps=20, gan_restarts=(10,), gan_metropolis_from=bad)
    with pytest.raises(ValueError, match="gan_restarts"):
        ic.Settings(gan_steps=20, gan_restarts=(20,))
    mala = ic.Settings(diffusion_metropolis_from=0, gan_metropolis_from=0)   # the rebuild says so
    assert ("--diffusion-metropolis-from 0 --gan-metropolis-from 0" in ic._rebuild_command(mala)
            and "metropolis" not in ic._rebuild_command(ic.Settings()))
    assert all(m.metropolis for m in ic.coverage_models(mala).values())
    assert not any(m.metropolis for m in ic.coverage_models(ic.Settings()).values())
    later = ic.Settings(diffusion_steps=30, diffusion_restarts=(10, 20), diffusion_metropolis_from=20)
    assert later.segments("diffusion") == [ic.Segment(0, 10, 0, False), ic.Segment(10, 20, 1, False),
                                           ic.Segment(20, 30, 2, True)]
    assert later.adjusted_steps("diffusion") == 10 and later.adjusted_steps("GAN") == 0
    assert later.metropolis_start("diffusion") == later.diffusion_metropolis_from and later.metropolis_start("GAN") is None
    assert ic.coverage_models(later)["diffusion"].steps == 10      # the first segment; run() continues it
    with pytest.raises(ValueError, match="model must be"):
        later.segments("vae")


def test_identity_coverage_run_saves_loads_and_verifies(tmp_path):
    """A tiny run (1 seed, 24 chains, 10 / 20 steps) survives save/load, decodes to its own final images,
    and verify_run re-computes its start exactly; a tampered file is refused."""
    from dpmlatent import identity_coverage as ic

    s = ic.Settings(seeds=(5,), chains=24, diffusion_steps=10, gan_steps=20)
    r = ic.run(s, progress=False)
    assert r.chains["diffusion"].codes.shape == (24, 704) and r.chains["GAN"].codes.shape[0] == 24
    back = ic.load_run(ic.save_run(r, tmp_path))
    import json
    rebuild = json.loads((tmp_path / "run.json").read_text())["rebuild"]
    assert "--seeds 5 --chains 24" in rebuild and "--diffusion-steps 10" in rebuild and "--gan-steps 20" in rebuild
    assert back.settings == s and torch.equal(back.targets, r.targets)
    for name, c in r.chains.items():
        assert torch.equal(back.chains[name].codes, c.codes)
        assert torch.equal(back.chains[name].energy, c.energy[::s.every].float().double())
        assert torch.equal(back.trace_steps[name], torch.arange(0, c.steps + 1, s.every))
        before, images = ic.decode(back, name)
        assert torch.equal(images, c.images) and torch.equal(before, c.before)
    check = ic.verify_run(back, steps={"diffusion": 5, "GAN": 10})
    assert all(v["trace"] <= 1e-6 and v["final"] <= 1e-6 and v["agree"] == 1.0 for v in check.values())
    with pytest.raises(ValueError, match="multiple"):
        ic.verify_run(back, steps={"diffusion": 3, "GAN": 10})
    with pytest.raises(ValueError, match="every model"):
        ic.verify_run(back, steps={"diffusion": 5})
    with pytest.raises(ValueError, match="name must be"):
        ic.decode(back, "vae")
    raw = (tmp_path / "chains.safetensors").read_bytes()
    (tmp_path / "chains.safetensors").write_bytes(raw[:-1] + bytes([raw[-1] ^ 1]))
    with pytest.raises(ValueError, match="sha256"):
        ic.load_run(tmp_path)
    with pytest.raises(FileNotFoundError, match="benchmarks/identity_coverage.py"):
        ic.load_run(tmp_path / "nothing")


def test_identity_coverage_extend_equals_a_run_with_that_restart(tmp_path):
    """Continuing a stored run's diffusion chains (fresh noise after the restart) makes exactly the chains
    of a run from scratch whose settings name the restart; the stored traces stay every 5th step."""
    from dpmlatent import identity_coverage as ic

    s = ic.Settings(seeds=(5,), chains=24, diffusion_steps=10, gan_steps=10)
    stored = ic.load_run(ic.save_run(ic.run(s, progress=False), tmp_path / "first"))
    longer = ic.extend(stored, 5, progress=False)
    assert longer.settings == dataclasses.replace(s, diffusion_steps=15, diffusion_restarts=(10,))
    assert torch.equal(longer.trace_steps["diffusion"], torch.cat([torch.arange(0, 11, 5), torch.arange(11, 16)]))
    scratch = ic.run(longer.settings, progress=False)
    d, e = longer.chains["diffusion"], scratch.chains["diffusion"]
    assert torch.equal(d.codes, e.codes) and d.steps == e.steps == 15
    assert torch.equal(d.energy[-5:], e.energy[-5:]) and torch.equal(d.sq_norm[-5:], e.sq_norm[-5:])
    assert not torch.equal(d.codes, stored.chains["diffusion"].codes)
    assert torch.equal(longer.chains["GAN"].codes, stored.chains["GAN"].codes)
    back = ic.load_run(ic.save_run(longer, tmp_path / "longer"))
    assert back.settings == longer.settings and torch.equal(back.trace_steps["diffusion"], torch.arange(0, 16, 5))
    assert "--diffusion-restarts 10" in ic._rebuild_command(back.settings)
    twice = ic.extend(back, 5, progress=False)                 # a second restart: fresh noise again
    assert twice.settings.diffusion_restarts == (10, 15) and twice.settings.diffusion_steps == 20
    assert torch.equal(twice.chains["diffusion"].codes, ic.run(twice.settings, progress=False).chains["diffusion"].codes)
    with pytest.raises(ValueError, match="multiple"):
        ic.extend(stored, 3, progress=False)
    for bad in ((1600,), (800, 400), (3,), [800]):
        with pytest.raises(ValueError, match="diffusion_restarts"):
            ic.Settings(diffusion_steps=1600, diffusion_restarts=bad)


def test_identity_coverage_metropolis_extension_equals_a_run_from_scratch(tmp_path):
    """Unadjusted burn-in, then Metropolis-adjusted steps after a restart: extending a stored run's GAN
    chains with ``metropolis=True`` makes exactly the chains of a run from scratch whose settings say so;
    the per-chain acceptance (averaged over every adjusted step) survives save/load; adjusted chains
    cannot go back to unadjusted; the settling test's windows stay inside the last segment."""
    from dpmlatent import identity_coverage as ic

    s = ic.Settings(seeds=(5,), chains=24, diffusion_steps=10, gan_steps=20)
    stored = ic.load_run(ic.save_run(ic.run(s, progress=False), tmp_path / "first"))
    assert all(c.acceptance is None for c in stored.chains.values())
    mala = ic.extend(stored, 10, model="GAN", metropolis=True, progress=False)
    assert mala.settings == dataclasses.replace(s, gan_steps=30, gan_restarts=(20,), gan_metropolis_from=20)
    assert torch.equal(mala.chains["diffusion"].codes, stored.chains["diffusion"].codes)
    acc = mala.chains["GAN"].acceptance
    assert acc.shape == (24,) and ((acc >= 0) & (acc <= 1)).all() and 0 < float(acc.mean()) < 1
    assert torch.equal(acc * 10, (acc * 10).round())                  # a share of 10 steps
    scratch = ic.run(mala.settings, progress=False)
    assert torch.equal(scratch.chains["GAN"].codes, mala.chains["GAN"].codes)
    assert torch.equal(scratch.chains["GAN"].acceptance, acc)
    more = ic.extend(mala, 10, model="GAN", metropolis=True, progress=False)   # acceptance over all 20 adjusted steps
    assert more.settings.gan_metropolis_from == 20 and more.settings.adjusted_steps("GAN") == 20
    again = ic.run(more.settings, progress=False).chains["GAN"]
    assert torch.equal(again.codes, more.chains["GAN"].codes)
    assert torch.allclose(again.acceptance, more.chains["GAN"].acceptance, atol=1e-12)
    back = ic.load_run(ic.save_run(more, tmp_path / "mala"))
    assert torch.equal(back.chains["GAN"].acceptance, more.chains["GAN"].acceptance)
    assert back.chains["diffusion"].acceptance is None
    assert "--gan-restarts 20 30 --gan-metropolis-from 20" in ic._rebuild_command(back.settings)
    # where the last segment began: the codes after 30 steps, kept exactly (int16 on the portable grid)
    assert torch.equal(back.segment_start["GAN"], mala.chains["GAN"].codes) and "diffusion" not in back.segment_start
    check = ic.verify_run(back, steps={"diffusion": 5, "GAN": 5})   # the adjusted steps are re-run too
    assert check["diffusion"]["segment"] is None
    seg = check["GAN"]["segment"]
    assert seg["start"] == 30 and seg["trace"] <= 1e-6 and seg["agree"] == 1.0 and check["GAN"]["agree"] == 1.0
    with pytest.raises(ValueError, match="shortest segment"):
        ic.verify_run(back, steps={"diffusion": 5, "GAN": 15})
    with pytest.raises(ValueError, match="metropolis=True"):
        ic.extend(back, 10, model="GAN", progress=False)
    with pytest.raises(ValueError, match="model must be"):
        ic.extend(back, 10, model="vae", progress=False)
    # traces every 5 steps: 40 GAN steps are 9 rows (a quarter: 2); its 20 adjusted steps 4 rows (half: 2)
    assert ic.settling(back, "GAN").window == 2 and ic.settling(mala, "GAN").window == 1   # 10 adjusted steps
    assert ic.settling(back, "diffusion", "sq_norm").window == 1 and ic.settling(stored, "GAN").window == 1
    with pytest.raises(ValueError, match="what must be"):
        ic.settling(back, "GAN", "acceptance")
