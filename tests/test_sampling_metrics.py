import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from dpmlatent import metrics, zoo
from dpmlatent.classifier import DigitClassifier
from dpmlatent.sampling import sample


def test_sample_shape_and_reproducible(tiny_unet):
    sched = DDIMScheduler.from_config(zoo.make_scheduler().config)
    a = sample(tiny_unet, sched, 5, num_inference_steps=4, generator=torch.Generator().manual_seed(1),
               batch_size=2, progress=False)
    b = sample(tiny_unet, sched, 5, num_inference_steps=4, generator=torch.Generator().manual_seed(1),
               batch_size=2, progress=False)
    assert a.shape == (5, 1, 8, 8) and torch.equal(a, b)
    assert a.abs().max() <= 1.0 + 1e-6  # the schedule clips x0


def test_sample_with_ddpm_scheduler_and_bad_args(tiny_unet):
    sched = DDPMScheduler.from_config(zoo.make_scheduler().config)
    x = sample(tiny_unet, sched, 2, num_inference_steps=3, progress=False,
               generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(x).all()
    with pytest.raises(ValueError, match="eta"):
        sample(tiny_unet, sched, 2, num_inference_steps=3, eta=0.5, progress=False)
    with pytest.raises(ValueError, match="num_samples"):
        sample(tiny_unet, sched, 0, progress=False)
    with pytest.raises(ValueError, match="num_inference_steps"):
        sample(tiny_unet, sched, 1, num_inference_steps=0, progress=False)


def test_frechet_distance_properties():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(2000, 4, generator=g)
    b = torch.randn(2000, 4, generator=g)
    assert metrics.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert metrics.frechet_distance(a, b) < 0.05
    # shifting the mean by 1 in every coordinate adds |mu|^2 = 4
    assert metrics.frechet_distance(a, b + 1.0) == pytest.approx(4.0, abs=0.1)
    with pytest.raises(ValueError):
        metrics.frechet_distance(a, torch.randn(10, 3))


def test_quality_row_counts():
    clf = DigitClassifier().eval()
    x = torch.rand(32, 1, 8, 8) * 2 - 1
    row = metrics.quality_row("random", x, clf, x)
    assert sum(row.class_fractions) == pytest.approx(1.0)
    assert 0 <= row.confident <= 1 and row.frechet == pytest.approx(0.0, abs=1e-3)
    _, feats = metrics.classify(clf, x)
    assert row.frechet == pytest.approx(metrics.frechet_distance(feats, feats), abs=1e-6)   # both ~0 (round-off)
    y = torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    _, feats_y = metrics.classify(clf, y)
    row_y = metrics.quality_row("y", y, clf, x)             # one FD, reported plain and bias-corrected
    assert row_y.frechet == metrics.FrechetReference(feats)(feats_y) == row_y.frechet_jackknife[0]
    assert row_y.frechet == pytest.approx(metrics.frechet_distance(feats_y, feats), abs=1e-8)
    assert row.num_samples == 32 and "random" in str(metrics.format_table([row]))
    assert f" {row.confident:.2f} " in str(metrics.format_table([row]))     # 32 samples: 2 decimals
    fd = row.frechet_ci                                                       # bias-corrected, with its interval
    assert fd.n == 32 and fd.method == "jackknife" and fd.low < fd.estimate < fd.high
    assert str(fd) in str(metrics.format_table([row]))
    bare = metrics.QualityRow("bare", 1.0, [1.0], 0.0, num_samples=4)
    assert str(metrics.format_table([bare])).rstrip().endswith("-")
    with pytest.raises(ValueError, match="no leave-one-out"):
        bare.frechet_ci
    with pytest.raises(ValueError, match="threshold"):
        metrics.quality_row("x", x, clf, x, threshold=1.5)


def test_nearest_mean_accuracy():
    from dpmlatent.metrics import nearest_mean_accuracy

    g = torch.Generator().manual_seed(0)
    labels = torch.arange(200) % 4
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    separated = centres[labels] + torch.randn(200, 2, generator=g)
    assert nearest_mean_accuracy(separated, labels) == 1.0
    noise = torch.randn(200, 2, generator=g)
    assert nearest_mean_accuracy(noise, labels) < 0.5                 # chance is 0.25
    with pytest.raises(ValueError, match="features must be"):
        nearest_mean_accuracy(noise, labels[:10])
    with pytest.raises(ValueError, match="train_fraction"):
        nearest_mean_accuracy(noise, labels, train_fraction=1.0)


def test_frechet_leave_one_out_matches_the_direct_computation():
    g = torch.Generator().manual_seed(1)
    ref = metrics.FrechetReference(torch.randn(100, 5, generator=g, dtype=torch.float64))
    feats = torch.randn(20, 3, 5, generator=g) + 3                          # 20 inputs x 3 seeds, float32
    direct = torch.tensor([ref(torch.cat([feats[:i], feats[i + 1:]]).reshape(-1, 5)) for i in range(20)],
                          dtype=torch.float64)
    assert torch.allclose(ref.leave_one_out(feats), direct, rtol=0, atol=1e-9)
    ref.CHUNK_BYTES = 8 * 5 * 5 * 3                                         # chunks of 3 inputs (the last one 2)
    assert torch.allclose(ref.leave_one_out(feats), direct, rtol=0, atol=1e-9)
    del ref.CHUNK_BYTES
    flat = feats[:, 0]                                                      # one row per input
    assert torch.allclose(ref.leave_one_out(flat)[:2],
                          torch.tensor([ref(flat[1:]), ref(torch.cat([flat[:1], flat[2:]]))], dtype=torch.float64))
    with pytest.raises(ValueError, match="feats must be"):
        ref.leave_one_out(torch.randn(4, 3, 6))
    with pytest.raises(ValueError, match="at least 2 inputs"):
        ref.leave_one_out(torch.randn(2, 1, 5))


def test_linear_probe_reads_linear_structure_and_only_that():
    from dpmlatent.metrics import linear_probe

    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (600,), generator=gen)
    centres = torch.randn(3, 5, generator=gen) * 4
    x = centres[y] + torch.randn(600, 5, generator=gen)
    correct = linear_probe(x[:400], y[:400], x[400:], y[400:])
    assert correct.shape == (200,) and correct.dtype == torch.bool and correct.double().mean() > 0.95
    # the same call gives the same answer (convex, from zero); rescaling a feature changes nothing
    assert torch.equal(correct, linear_probe(x[:400], y[:400], x[400:], y[400:]))
    x2 = x * torch.tensor([1.0, 100.0, 1.0, 0.01, 1.0])
    assert torch.equal(correct, linear_probe(x2[:400], y[:400], x2[400:], y[400:]))
    # labels unrelated to the features: near chance (1/3)
    noise = torch.randint(0, 3, (600,), generator=gen)
    assert abs(linear_probe(x[:400], noise[:400], x[400:], noise[400:]).double().mean() - 1 / 3) < 0.1
    # images (N, C, H, W) are flattened
    assert linear_probe(x[:400, :4].view(400, 1, 2, 2), y[:400], x[400:, :4].view(200, 1, 2, 2), y[400:]).shape == (200,)
    with pytest.raises(ValueError, match="train_labels"):
        linear_probe(x[:400], y[:399], x[400:], y[400:])
    with pytest.raises(ValueError, match="differ in size"):
        linear_probe(x[:400], y[:400], x[400:, :4], y[400:])
    with pytest.raises(ValueError, match="l2 must be"):
        linear_probe(x[:400], y[:400], x[400:], y[400:], l2=-1)


def test_slant_reads_a_leaning_stroke_and_is_shift_invariant():
    from dpmlatent.metrics import slant

    upright = -torch.ones(1, 1, 8, 8)
    upright[0, 0, 1:7, 3] = 1.0                       # a vertical bar
    right = -torch.ones(1, 1, 8, 8)
    for row in range(1, 7):                           # top to the right: column falls as the row grows
        right[0, 0, row, 6 - row] = 1.0
    left = right.flip(3)
    s = slant(torch.cat([upright, right, left, -torch.ones(1, 1, 8, 8)]))
    assert s.shape == (4,)
    assert abs(float(s[0])) < 1e-12 and float(s[1]) == pytest.approx(1.0) and float(s[2]) == pytest.approx(-1.0)
    assert float(s[3]) == 0.0                         # no ink: 0, not nan
    shifted = torch.roll(right, 1, dims=3)           # moving the digit does not change its slant
    assert float(slant(shifted)[0]) == pytest.approx(1.0)
    assert slant(right.double()).dtype == torch.float64
    with pytest.raises(ValueError, match="images must have shape"):
        slant(torch.zeros(8, 8))


def test_class_median_split_uses_the_reference_medians_per_class():
    from dpmlatent.metrics import class_median_split

    ref_v = torch.tensor([1.0, 2.0, 3.0, 10.0, 20.0, 30.0])
    ref_y = torch.tensor([0, 0, 0, 1, 1, 1])
    v, y = torch.tensor([2.5, 1.5, 25.0, 15.0]), torch.tensor([0, 0, 1, 1])
    assert class_median_split(v, y, ref_v, ref_y).tolist() == [1, 0, 1, 0]     # medians 2 and 20
    assert class_median_split(ref_v, ref_y, ref_v, ref_y).tolist() == [0, 0, 1, 0, 0, 1]
    with pytest.raises(ValueError, match="do not occur"):
        class_median_split(v, torch.tensor([0, 0, 2, 2]), ref_v, ref_y)
    with pytest.raises(ValueError, match="labels"):
        class_median_split(v, y.float(), ref_v, ref_y)


def test_clean_paths_needs_the_ends_one_switch_and_no_third_label():
    from dpmlatent.metrics import clean_paths

    labels = torch.tensor([[3, 3, 8, 8],      # clean
                           [3, 8, 3, 8],      # three switches
                           [3, 5, 8, 8],      # a third digit on the way
                           [8, 8, 3, 3],      # the wrong way round
                           [3, 3, 3, 8]])     # clean
    first, second = torch.full((5,), 3), torch.full((5,), 8)
    assert clean_paths(labels, first, second).tolist() == [1.0, 0.0, 0.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="labels must be"):
        clean_paths(labels[:, :1], first, second)
    with pytest.raises(ValueError, match="labels must be"):
        clean_paths(labels, first[:4], second)


def test_interpolation_pairs_have_different_labels_and_are_seeded():
    from dpmlatent.metrics import interpolation_pairs

    labels = torch.arange(20) % 4
    a, b = interpolation_pairs(labels, 10, generator=torch.Generator().manual_seed(0))
    assert a.shape == b.shape == (10,) and (labels[a] != labels[b]).all()
    a2, b2 = interpolation_pairs(labels, 10, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, a2) and torch.equal(b, b2)
    with pytest.raises(ValueError, match="found only"):
        interpolation_pairs(torch.zeros(20, dtype=torch.long), 3, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="num must be"):
        interpolation_pairs(labels, 0, generator=torch.Generator())


def test_fmt_mean_and_count_calls():
    from dpmlatent.notebook import count_calls
    from dpmlatent.reporting import fmt_mean

    assert fmt_mean(torch.tensor([1.0, 1.2, 0.8, 1.0])) == "1.00"         # se 0.08: two decimals
    with pytest.raises(ValueError, match="at least 2"):
        fmt_mean(torch.tensor([1.0]))
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    with count_calls(a, b) as calls:
        a(torch.zeros(3, 2)); a(torch.zeros(1, 2)); b(torch.zeros(1, 2))
    assert calls == {0: 2, 1: 1}
    a(torch.zeros(1, 2))                                                   # hooks are gone after the block
    assert calls == {0: 2, 1: 1}


def test_perceptual_distance_is_lpips_shaped_on_the_cnn_features():
    from dpmlatent.classifier import ClassifierConfig

    torch.manual_seed(0)
    net = DigitClassifier(ClassifierConfig(num_classes=2)).eval()
    a = torch.rand(6, 1, 8, 8, dtype=torch.float64) * 2 - 1
    b = torch.rand(6, 1, 8, 8, dtype=torch.float64) * 2 - 1
    d = metrics.perceptual_distance(net, a, b)
    assert d.shape == (6,) and d.dtype == torch.float64
    assert torch.equal(metrics.perceptual_distance(net, a, a), torch.zeros(6, dtype=torch.float64))
    assert ((d > 0) & (d <= 1)).all()
    assert torch.allclose(d, metrics.perceptual_distance(net, b, a))                 # symmetric
    # the formula by hand: unit channel vectors after each convolution's activation, squared distance / 4,
    # mean over positions, mean over the three layers
    layers, x, y, total = 0, a.float(), b.float(), torch.zeros(6, dtype=torch.float64)
    for m in net.body:
        x, y = m(x), m(y)
        if isinstance(m, torch.nn.GELU) and layers < 3:
            ux = x.double() / (x.double().norm(dim=1, keepdim=True) + 1e-10)
            uy = y.double() / (y.double().norm(dim=1, keepdim=True) + 1e-10)
            total += ((ux - uy) ** 2).sum(1).flatten(1).mean(1) / 4
            layers += 1
    assert torch.allclose(d, total / 3, atol=1e-6)
    # a small change of the image is a small distance; a far one is larger
    near = metrics.perceptual_distance(net, a, (a + 0.01).clamp(-1, 1))
    assert (near < d).all()
    with pytest.raises(TypeError, match="CNN"):
        metrics.perceptual_distance(DigitClassifier(ClassifierConfig(arch="mlp")), a, b)
    with pytest.raises(ValueError, match="same shape"):
        metrics.perceptual_distance(net, a, b[:3])
    with pytest.raises(ValueError, match=r"\(N, 1, 8, 8\)"):
        metrics.perceptual_distance(net, torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 4))
