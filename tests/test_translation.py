import copy
import math

import pytest
import torch
from diffusers import DDIMScheduler

from dpmlatent import data, metrics, train, zoo
from dpmlatent.classifier import ClassifierConfig, DigitClassifier
from dpmlatent.cycle import cycle_translate, ddib_translate
from dpmlatent.translation import (METHODS, evaluate_translation, format_translation_table, reference_rows,
                                   translate, translation_sweep)


def _sched():
    return DDIMScheduler.from_config(zoo.make_scheduler().config)


def _classifiers():
    torch.manual_seed(0)
    return DigitClassifier().eval(), DigitClassifier(ClassifierConfig(num_classes=2)).eval()


def test_psnr_matches_its_definition():
    ref = torch.zeros(2, 1, 8, 8)
    x = ref + torch.tensor([0.2, 0.02]).view(2, 1, 1, 1)
    # mse 0.04 and 0.0004 with data range 2: 10 log10(4 / mse)
    assert metrics.psnr(x, ref).tolist() == pytest.approx([20.0, 40.0], abs=1e-4)
    assert math.isinf(metrics.psnr(ref, ref)[0].item())


def test_ssim_identity_and_ordering():
    g = torch.Generator().manual_seed(0)
    ref = data.handwritten_digits("test").images[:4]
    small = (ref + 0.05 * torch.randn(ref.shape, generator=g)).clamp(-1, 1)
    large = (ref + 0.5 * torch.randn(ref.shape, generator=g)).clamp(-1, 1)
    assert metrics.ssim(ref, ref).tolist() == pytest.approx([1.0] * 4, abs=1e-5)
    s_small, s_large = metrics.ssim(small, ref), metrics.ssim(large, ref)
    assert s_small.shape == (4,) and (s_small > s_large).all() and (s_small < 1).all()


def test_psnr_ssim_reject_bad_input():
    a = torch.zeros(2, 1, 8, 8)
    with pytest.raises(ValueError, match="same shape"):
        metrics.psnr(a, torch.zeros(2, 1, 8, 7))
    with pytest.raises(TypeError, match="torch tensors"):
        metrics.ssim(a, a.numpy())
    with pytest.raises(ValueError, match=r"kernel_size must be an odd integer in \[3, 8\]"):
        metrics.ssim(a, a, kernel_size=9)


def test_domain_dataset_labels_each_image_by_its_domain():
    d = train.training_data("digits-domain", "test")
    hw, ts = data.handwritten_digits("test"), data.typeset_digits("test")
    assert len(d.labels) == len(hw.labels) + len(ts.labels)
    assert d.labels.tolist() == [0] * len(hw.labels) + [1] * len(ts.labels)
    assert train.DOMAINS[0] == "handwritten" and train.DOMAINS[1] == "typeset"
    assert zoo.ZOO["domain-classifier"].dataset == "digits-domain"


def test_translate_dispatches_to_the_methods(tiny_unet, x0):
    other = copy.deepcopy(tiny_unet)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05 * torch.randn_like(p))
    s = _sched()
    a = translate("cyclediffusion", tiny_unet, other, s, x0, strength=0.5, num_inference_steps=6,
                  generator=torch.Generator().manual_seed(3))
    b = cycle_translate(tiny_unet, other, s, x0, eta=0.1, strength=0.5, num_inference_steps=6,
                        generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    c = translate("ddib", tiny_unet, other, s, x0, strength=0.5, num_inference_steps=6)
    assert torch.equal(c, ddib_translate(tiny_unet, other, s, x0, strength=0.5, num_inference_steps=6))
    e = translate("edit-friendly", tiny_unet, other, s, x0, strength=0.5, num_inference_steps=6,
                  generator=torch.Generator().manual_seed(3))              # eta 1 by default
    assert torch.equal(e, cycle_translate(tiny_unet, other, s, x0, eta=1.0, strength=0.5, num_inference_steps=6,
                                          generator=torch.Generator().manual_seed(3), encoder="edit-friendly"))
    assert not torch.equal(e, cycle_translate(tiny_unet, other, s, x0, eta=1.0, strength=0.5, num_inference_steps=6,
                                              generator=torch.Generator().manual_seed(3)))
    with pytest.raises(ValueError, match="method must be one of"):
        translate("cycle", tiny_unet, other, s, x0, strength=0.5, num_inference_steps=6)
    with pytest.raises(ValueError, match="ddib is deterministic"):
        translate("ddib", tiny_unet, other, s, x0, strength=0.5, num_inference_steps=6, eta=0.1)


def test_evaluate_translation_of_the_source_itself(x0):
    digit, domain = _classifiers()
    labels = digit(x0).argmax(1)  # a random classifier: use its own labels as "true"
    real = data.typeset_digits("test").images[:20]
    row = evaluate_translation("none", 0.0, x0, x0, labels, target_domain=1, digit_classifier=digit,
                               domain_classifier=domain, real_target=real)
    assert row.class_kept == 1.0 and math.isinf(row.psnr) and row.ssim == pytest.approx(1.0, abs=1e-5)
    expected = domain(x0).softmax(-1)[:, 1].mean().item()
    assert row.realism == pytest.approx(expected, abs=1e-6)
    # FD: the one implementation of the book (FrechetReference), equal to the textbook formula
    other, real_many = data.handwritten_digits("test").images[:120], data.typeset_digits("test").images[:150]
    row = evaluate_translation("other", 0.5, other, other, digit(other).argmax(1), target_domain=1,
                               digit_classifier=digit, domain_classifier=domain, real_target=real_many)
    feats_o, feats_r = metrics.classify(digit, other)[1], metrics.classify(digit, real_many)[1]
    assert row.frechet == metrics.FrechetReference(feats_r)(feats_o)
    assert row.frechet == pytest.approx(metrics.frechet_distance(feats_o, feats_r), rel=1e-8)
    with pytest.raises(ValueError, match=r"target_domain must be an integer in \[0, 1\]"):
        evaluate_translation("none", 0.0, x0, x0, labels, target_domain=2, digit_classifier=digit,
                             domain_classifier=domain, real_target=real)
    with pytest.raises(ValueError, match="labels must be a"):
        evaluate_translation("none", 0.0, x0, x0, labels[:2], target_domain=1, digit_classifier=digit,
                             domain_classifier=domain, real_target=real)


def test_sweep_is_reproducible_and_identical_models_reconstruct(tiny_unet, tmp_path):
    digit, domain = _classifiers()
    src = data.handwritten_digits("test")
    x, labels = src.images[:12], src.labels[:12]
    real = data.typeset_digits("test").images[:24]
    kw = dict(target_domain=1, digit_classifier=digit, domain_classifier=domain, real_target=real,
              strengths=(0.5, 1.0), num_inference_steps=5, progress=False)
    a = translation_sweep(tiny_unet, tiny_unet, _sched(), x, labels, **kw)
    b = translation_sweep(tiny_unet, tiny_unet, _sched(), x, labels, **kw)
    assert [(r.method, r.strength) for r in a.rows] == [(m, s) for m in METHODS for s in (0.5, 1.0)]
    assert a.rows == b.rows
    for key in a.images:
        assert torch.equal(a.images[key], b.images[key])
    from dpmlatent.run_store import RunStore   # through a store: recorded, then read with every run checked
    rec = RunStore.open(tmp_path / "runs")
    rows_rec = translation_sweep(tiny_unet, tiny_unet, _sched(), x, labels, store=rec, **kw).rows
    assert [r.ssim for r in rows_rec] == pytest.approx([r.ssim for r in a.rows], abs=1e-3)   # images on the grid
    rec.save(rebuild="test")
    read = RunStore.open(tmp_path / "runs", check=len(rec))
    assert translation_sweep(tiny_unet, tiny_unet, _sched(), x, labels, store=read, **kw).rows == rows_rec
    assert read.summary().checked == len(a.rows) == len(rec)
    with pytest.raises(KeyError, match="not in the store"):        # another scheduler: other runs
        translation_sweep(tiny_unet, tiny_unet, DDIMScheduler(num_train_timesteps=100, beta_end=0.03), x, labels,
                          store=read, **kw)
    # with the same model on both sides CycleDiffusion is an exact reconstruction
    for s in (0.5, 1.0):
        assert (a.images[("cyclediffusion", s)] - x).abs().max() <= 1e-5
    c = translation_sweep(tiny_unet, tiny_unet, _sched(), x, labels, methods=("cyclediffusion",), eta=1.0,
                          label="cyclediffusion eta=1", **kw)
    assert [r.method for r in c.rows] == ["cyclediffusion eta=1"] * 2 and ("cyclediffusion eta=1", 1.0) in c.images
    with pytest.raises(ValueError, match="single-method"):
        translation_sweep(tiny_unet, tiny_unet, _sched(), x, labels, label="x", **kw)
    table = str(format_translation_table(a.rows))
    assert table.count("\n") == len(a.rows) and "cyclediffusion" in table
    assert all(r.num_images == len(x) for r in a.rows)
    assert f" {a.rows[0].class_kept:.{1 if len(x) < 25 else 2}f} " in table.splitlines()[1]   # shares at n's precision
    with pytest.raises(ValueError, match="strength must be in"):
        translation_sweep(tiny_unet, tiny_unet, _sched(), x, labels, **{**kw, "strengths": (0.0,)})
    with pytest.raises(ValueError, match="methods must be drawn from"):
        translation_sweep(tiny_unet, tiny_unet, _sched(), x, labels, methods=("gan",),
                          **{k: v for k, v in kw.items()})


def test_reference_rows():
    digit, domain = _classifiers()
    src, tgt = data.handwritten_digits("test"), data.typeset_digits("train")
    rows = reference_rows(src.images[:10], src.labels[:10], tgt.images[:10], tgt.labels[:10], target_domain=1,
                          digit_classifier=digit, domain_classifier=domain,
                          real_target=data.typeset_digits("test").images[:30])
    assert [r.method for r in rows] == ["source (unchanged)", "real target"]
    assert math.isinf(rows[0].psnr) and math.isnan(rows[1].psnr) and math.isnan(rows[1].ssim)
    assert "-" in str(format_translation_table(rows)).splitlines()[2]


@pytest.mark.slow
def test_shipped_domain_classifier_tells_the_domains_apart():
    model = zoo.load("domain-classifier")
    test = train.training_data("digits-domain", "test")
    assert model.config.num_classes == 2
    assert train.accuracy(model, test) >= 0.97


def test_tradeoff_at_interpolates_in_ssim():
    from dpmlatent.translation import TranslationRow, tradeoff_at

    rows = [TranslationRow("m", 0.3, 0.9, 0.2, 30.0, 20.0, 0.8),
            TranslationRow("m", 1.0, 0.5, 0.8, 10.0, 10.0, 0.4),
            TranslationRow("other", 0.3, 0.0, 0.0, 0.0, 0.0, 0.6)]
    assert tradeoff_at(rows, "m", 0.6) == pytest.approx(0.5)
    assert tradeoff_at(rows, "m", 0.7, column="class_kept") == pytest.approx(0.8)
    assert math.isnan(tradeoff_at(rows, "m", 0.9))
    with pytest.raises(ValueError, match="at least two strengths"):
        tradeoff_at(rows, "other", 0.6)
    with pytest.raises(ValueError, match="column must be"):
        tradeoff_at(rows, "m", 0.6, column="ssim")


def test_frechet_reference_matches_frechet_distance():
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(60, 5, generator=g, dtype=torch.float64)
    feats = 0.5 + 2 * torch.randn(40, 5, generator=g, dtype=torch.float64) @ torch.randn(5, 5, generator=g, dtype=torch.float64)
    fd = metrics.FrechetReference(ref)
    assert fd(feats) == pytest.approx(metrics.frechet_distance(feats, ref), rel=1e-9)
    assert fd(ref) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match=r"feats must be \(N, 5\)"):
        fd(feats[:, :4])
    with pytest.raises(ValueError, match="reference must be an"):
        metrics.FrechetReference(ref[0])
    # from moments: the features' own moments give the same FD; the reference's own give 0
    assert fd.to_moments(feats.mean(0), torch.cov(feats.T)) == fd(feats)
    assert fd.to_moments(ref.mean(0), torch.cov(ref.T)) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="mean and cov must be"):
        fd.to_moments(feats.mean(0), torch.eye(4, dtype=torch.float64))


def _task(tiny_unet, n=12):
    from dpmlatent.translation import TranslationTask

    other = copy.deepcopy(tiny_unet)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    src = data.handwritten_digits("test")
    source = data.ImageData(src.images[:n], src.labels[:n], src.styles[:n])
    real = data.typeset_digits("test")
    return TranslationTask("handwritten->typeset", tiny_unet, other, _sched(), source, real.images[:30],
                           data.ImageData(real.images[:n], real.labels[:n], real.styles[:n]), 1)


def test_matched_point_hits_the_level_between_two_direct_neighbours(tiny_unet, tmp_path):
    from dpmlatent.translation import matched_point, score_images, translate

    task, (digit, domain), n = _task(tiny_unet), _classifiers(), 10
    seeds = (0, 1, 2)

    def direct(k):  # mean SSIM of k sampler steps over the seeds, computed here without matched_point
        outs = [translate("sdedit", task.src_unet, task.tgt_unet, task.scheduler, task.source.images,
                          strength=(k + 0.5) / n, num_inference_steps=n, generator=torch.Generator().manual_seed(s))
                for s in seeds]
        return [score_images(o, task.source.images, task.source.labels, target_domain=1, digit_classifier=digit,
                             domain_classifier=domain) for o in outs]

    s3, s4 = direct(3), direct(4)
    m3, m4 = (float(torch.stack([d["ssim"] for d in s]).mean()) for s in (s3, s4))
    assert m3 > m4                                   # more steps, less faithful
    level = 0.3 * m3 + 0.7 * m4
    p = matched_point(task, "sdedit", level, digit_classifier=digit, domain_classifier=domain, seeds=seeds,
                      num_inference_steps=n, start=0.9)
    assert p.steps == (3, 4) and p.seeds == 3 and p.weight == pytest.approx(0.7)
    # through a RunStore: recorded, then read back (two runs made again and compared), the same point
    from dpmlatent.run_store import RunStore
    folder = tmp_path / "runs"
    kw = dict(digit_classifier=digit, domain_classifier=domain, seeds=seeds, num_inference_steps=n, start=0.9)
    rec = RunStore.open(folder)
    p_rec = matched_point(task, "sdedit", level, store=rec, **kw)
    rec.save(rebuild="test")
    read = RunStore.open(folder, check=2)
    p_read = matched_point(task, "sdedit", level, store=read, **kw)
    # the stored images are on the grid (2^-12), so the scores move by about that much, never the bracket
    assert p_rec.steps == p_read.steps == p.steps and p_rec.weight == p_read.weight
    assert all(torch.equal(p_rec.lo[c], p_read.lo[c]) for c in p.lo)
    assert p_rec.weight == pytest.approx(p.weight, abs=1e-2)
    assert torch.allclose(p_rec.lo["ssim"], p.lo["ssim"], atol=1e-3)
    assert read.summary().checked == 2 and read.summary().max_difference == 0.0 and read.summary().read == len(rec)
    with pytest.raises(TypeError, match="store must be a RunStore"):
        matched_point(task, "sdedit", level, store={}, **kw)
    assert float(p.values("ssim").mean()) == pytest.approx(level, abs=1e-12)
    assert torch.equal(p.lo["realism"], torch.stack([d["realism"] for d in s3]))  # the neighbours are direct runs
    assert p.lo["features"].shape == (12, 3, 128) and p.values("class_kept").shape == (3, 12)
    assert 3 / n <= p.strength <= 4 / n
    ref = metrics.FrechetReference(metrics.classify(digit, task.real_target)[1])
    fd_lo = ref(p.lo["features"].reshape(-1, 128))
    fd_hi = ref(p.hi["features"].reshape(-1, 128))
    assert p.frechet(ref) == pytest.approx(0.3 * fd_lo + 0.7 * fd_hi)
    assert p.bracket_change("frechet", ref) == pytest.approx(abs(fd_hi - fd_lo))
    assert p.bracket_change("ssim") == pytest.approx(m3 - m4)
    assert sorted(p.probe) == [3, 4, 5]                 # the interpolation check: 4 steps read off between 3 and 5
    s5 = direct(5)[0]
    f3, f4, f5 = (float(d["realism"].mean()) for d in (s3[0], s4[0], s5))
    q3, q4, q5 = (float(d["ssim"].mean()) for d in (s3[0], s4[0], s5))
    assert p.interpolation_error("realism") == pytest.approx(abs(f3 + (f5 - f3) * (q3 - q4) / (q3 - q5) - f4))
    assert p.interpolation_error("frechet", ref) >= 0
    with pytest.raises(ValueError, match="needs the FD reference"):
        p.interpolation_error("frechet")
    with pytest.raises(ValueError, match="does not reach mean ssim 0.9999"):
        matched_point(task, "sdedit", 0.9999, digit_classifier=digit, domain_classifier=domain, seeds=(0,),
                      num_inference_steps=n, start=0.1)
    with pytest.raises(ValueError, match=r"level must be a faithfulness in \(0, 1\)"):
        matched_point(task, "sdedit", 1.5, digit_classifier=digit, domain_classifier=domain)
    with pytest.raises(ValueError, match="seeds must be"):
        matched_point(task, "sdedit", 0.5, digit_classifier=digit, domain_classifier=domain, seeds=(0, 0))
    with pytest.raises(ValueError, match="score must be one of"):
        p.values("frechet")


def test_matched_difference_is_paired(tiny_unet):
    from dpmlatent.translation import matched_difference, matched_point

    task, (digit, domain), n = _task(tiny_unet), _classifiers(), 10
    kw = dict(digit_classifier=digit, domain_classifier=domain, seeds=(0, 1, 2), num_inference_steps=n)
    a = matched_point(task, "sdedit", 0.5, **kw)
    b = matched_point(task, "sdedit", 0.5, eta=0.3, label="sdedit eta=0.3", **kw)
    assert b.method == "sdedit eta=0.3"
    ref = metrics.FrechetReference(metrics.classify(digit, task.real_target)[1])
    same = matched_difference(a, a, "realism")
    assert same.estimate == 0 and same.low == same.high == 0
    d = matched_difference(a, b, "realism")
    assert d.estimate == pytest.approx(float(a.values("realism").mean() - b.values("realism").mean()))
    assert d.seeds == 3 and d.n == 12 and d.low <= d.estimate <= d.high
    f = matched_difference(a, b, "frechet", reference=ref)
    # the bias-corrected jackknife: each input left out with all its seeds, the two FDs recomputed
    keep = [torch.cat([torch.arange(i), torch.arange(i + 1, 12)]) for i in range(12)]
    loo = torch.tensor([a.frechet(ref, k) - b.frechet(ref, k) for k in keep], dtype=torch.float64)
    assert torch.allclose(a.frechet_leave_one_out(ref) - b.frechet_leave_one_out(ref), loo, rtol=0, atol=1e-8)
    plain = a.frechet(ref) - b.frechet(ref)
    assert f.estimate == pytest.approx(12 * plain - 11 * float(loo.mean()), abs=1e-7)
    assert f.method == "jackknife" and f.seeds == 3 and f.n == 12 and f.low < f.estimate < f.high
    with pytest.raises(TypeError, match="FrechetReference"):
        matched_difference(a, b, "frechet")


def test_translation_task_loads_both_models_and_a_seeded_subset():
    from dpmlatent.translation import translation_task

    a = translation_task("handwritten->typeset", num_images=6, seed=3)
    b = translation_task("handwritten->typeset", num_images=6, seed=3)
    c = translation_task("handwritten->typeset", num_images=6, seed=4)
    assert a.source.images.shape == (6, 1, 8, 8) and torch.equal(a.source.images, b.source.images)
    assert not torch.equal(a.source.images, c.source.images)
    assert a.target_domain == 1 and a.source.labels.tolist() == b.source.labels.tolist()
    assert a.real_target.shape[1:] == (1, 8, 8) and len(a.target_train.labels) == 6
    assert a.scheduler.config.beta_schedule == "squaredcos_cap_v2" and not a.src_unet.training
    with pytest.raises(ValueError, match="direction must be one of"):
        translation_task("typeset->cursive")
    with pytest.raises(ValueError, match="num_images must be an integer"):
        translation_task("handwritten->typeset", num_images=1)
