"""The book's experimental method: intervals, verdicts and the result table (src/dpmlatent/evidence.py)."""

import pytest

from dpmlatent.evidence import Interval, difference_of_shares, verdict, wilson_interval


def test_wilson_interval_known_values():
    # Newcombe (1998), table I: 81/263 -> 0.2553 .. 0.3662; 15/148 -> 0.0624 .. 0.1605
    a = wilson_interval(81, 263)
    assert (round(a.low, 4), round(a.high, 4)) == (0.2553, 0.3662)
    b = wilson_interval(15, 148)
    assert (round(b.low, 4), round(b.high, 4)) == (0.0624, 0.1605)
    assert wilson_interval(0, 10).low == 0.0 and wilson_interval(10, 10).high == 1.0


def test_difference_of_shares_known_values():
    # Newcombe (1998), table II, method 10: 56/70 - 48/80 -> 0.0524 .. 0.3339
    d = difference_of_shares(56, 70, 48, 80)
    assert (round(d.low, 4), round(d.high, 4)) == (0.0524, 0.3339)
    assert d.estimate == pytest.approx(0.2)


def test_verdict_words_follow_the_interval():
    assert verdict(Interval(0.3, 0.1, 0.5, 48)) == "reproduces"
    assert verdict(Interval(0.1, -0.1, 0.3, 48)) == "inconclusive"
    assert verdict(Interval(-0.3, -0.5, -0.1, 48)) == "does not reproduce"
    assert verdict(Interval(-0.3, -0.5, -0.1, 48), claim="less") == "reproduces"
    with pytest.raises(ValueError, match="claim"):
        verdict(Interval(0, 0, 0, 1), claim="bigger")


def test_bad_counts_raise():
    with pytest.raises(ValueError, match="k must be"):
        wilson_interval(5, 4)
    with pytest.raises(ValueError, match="n must be"):
        wilson_interval(0, 0)
    with pytest.raises(ValueError, match="level"):
        wilson_interval(1, 4, level=1.5)
    assert str(Interval(0.146, -0.04, 0.32, 48)) == "0.15 [-0.04, 0.32]"


# ---------------------------------------------------------------------------------------------
# The bootstrap: coverage on simulated data sets whose true mean is known
# ---------------------------------------------------------------------------------------------

import torch

from dpmlatent.evidence import (Verdict, across_metrics, bootstrap_ci, paired_bootstrap_ci,
                                unpaired_bootstrap_ci, verdict_table)
from dpmlatent.reporting import Column, Table


def _coverage(draw, truth, *, datasets=1000, method="bca", seed=0):
    g, bg = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)
    hits = 0
    for _ in range(datasets):
        ci = bootstrap_ci(draw(g), method=method, generator=bg)
        hits += ci.low <= truth <= ci.high
    return hits / datasets


def _exponential(g, n=48):
    return torch.empty(n, dtype=torch.float64).exponential_(1.0, generator=g)      # skewed, mean 1


def _cube(g, n=48):
    return torch.rand(n, generator=g, dtype=torch.float64) ** 3                    # bounded in [0, 1], mean 1/4


def _crossed(g, seed_sd=0.1):
    """3 seeds x 48 inputs: skewed input effects, a seed effect and seed-by-input noise; mean 1."""
    inputs = torch.empty(48, dtype=torch.float64).exponential_(1.0, generator=g)
    seeds = seed_sd * torch.randn(3, 1, generator=g, dtype=torch.float64)
    return inputs[None] + seeds + 0.3 * torch.randn(3, 48, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("draw, truth", [(_exponential, 1.0), (_cube, 0.25), (_crossed, 1.0)],
                         ids=["skewed", "bounded", "seeds-x-inputs"])
def test_bca_interval_covers_the_true_mean_95_percent_of_the_time(draw, truth):
    # 1000 data sets: the Monte Carlo standard error of the coverage is 0.7 percentage points
    assert 0.92 <= _coverage(draw, truth) <= 0.98


def test_percentile_interval_coverage_on_a_bounded_distribution():
    assert 0.92 <= _coverage(_cube, 0.25, method="percentile") <= 0.98


def test_a_too_narrow_interval_would_fail_the_coverage_test():
    # the same check on 90% intervals must fail: the coverage test can tell levels apart
    g, bg = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
    hits = sum(bootstrap_ci(_exponential(g), level=0.9, generator=bg).contains(1.0) for _ in range(1000))
    assert hits / 1000 < 0.92


def test_paired_interval_is_narrower_than_unpaired_on_correlated_pairs():
    g = torch.Generator().manual_seed(3)
    base = torch.empty(64, dtype=torch.float64).exponential_(1.0, generator=g)   # what the inputs share
    a = base + 0.1 * torch.randn(64, generator=g, dtype=torch.float64) + 0.05
    b = base + 0.1 * torch.randn(64, generator=g, dtype=torch.float64)
    paired, unpaired = paired_bootstrap_ci(a, b), unpaired_bootstrap_ci(a, b)
    assert paired.estimate == pytest.approx(unpaired.estimate)
    assert paired.high - paired.low < 0.3 * (unpaired.high - unpaired.low)
    assert paired.low > 0 > unpaired.low          # pairing is what detects the small difference


def test_seeds_widen_the_interval_and_are_recorded():
    g = torch.Generator().manual_seed(4)
    x = _crossed(g, seed_sd=1.0)
    with_seeds, inputs_only = bootstrap_ci(x), bootstrap_ci(x.mean(0))
    assert with_seeds.seeds == 3 and with_seeds.n == 48 and inputs_only.seeds == 1
    assert with_seeds.estimate == pytest.approx(inputs_only.estimate)
    assert with_seeds.high - with_seeds.low > 1.5 * (inputs_only.high - inputs_only.low)


def test_set_level_statistic_is_recomputed_on_each_resample():
    g = torch.Generator().manual_seed(5)
    x = _exponential(g, 80)
    by_stat = bootstrap_ci(x, statistic=torch.mean, n_resamples=500)
    by_mean = bootstrap_ci(x, n_resamples=500)
    assert by_stat.estimate == pytest.approx(by_mean.estimate)
    assert by_stat.low == pytest.approx(by_mean.low, abs=0.05) and by_stat.high == pytest.approx(by_mean.high, abs=0.05)
    # a two-tensor statistic (features and labels resampled together), and a paired one
    feats, labels = torch.randn(60, 3, generator=g), torch.arange(60) % 2
    ci = bootstrap_ci((feats, labels), statistic=lambda f, l: f[l == 1].norm(dim=1).mean(), n_resamples=300)
    assert ci.low < ci.estimate < ci.high and ci.n == 60
    d = paired_bootstrap_ci(feats + 1, feats, statistic=lambda f: f.mean(), n_resamples=300)
    assert d.estimate == pytest.approx(1.0) and d.low == pytest.approx(1.0) and d.high == pytest.approx(1.0)


def test_bootstrap_is_reproducible_and_constant_data_gives_a_point():
    x = _cube(torch.Generator().manual_seed(6))
    assert bootstrap_ci(x) == bootstrap_ci(x)                       # default generator seeded 0
    c = bootstrap_ci([0.5] * 10)
    assert (c.low, c.estimate, c.high) == (0.5, 0.5, 0.5)


def test_bootstrap_bad_input_raises():
    with pytest.raises(ValueError, match="at least 2 inputs"):
        bootstrap_ci([1.0])
    with pytest.raises(ValueError, match="non-finite"):
        bootstrap_ci([1.0, float("nan")])
    with pytest.raises(ValueError, match="n_resamples"):
        bootstrap_ci([1.0, 2.0], n_resamples=10)
    with pytest.raises(ValueError, match="method"):
        bootstrap_ci([1.0, 2.0], method="normal")
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci([1.0, 2.0], level=95)
    with pytest.raises(TypeError, match="generator"):
        bootstrap_ci([1.0, 2.0], generator=0)
    with pytest.raises(ValueError, match="same shape"):
        paired_bootstrap_ci([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(TypeError, match="values"):
        bootstrap_ci("abc")
    with pytest.raises(ValueError, match="first dimension"):
        bootstrap_ci((torch.zeros(3), torch.zeros(4)), statistic=lambda a, b: 0.0)


# ---------------------------------------------------------------------------------------------
# Verdicts and their table
# ---------------------------------------------------------------------------------------------

def _v(low, high, **kw):
    return Verdict("claim", "metric", "judge", Interval((low + high) / 2, low, high, 48), **kw)


def test_verdict_object_words_follow_the_interval():
    assert _v(0.1, 0.5).reproduces == "yes"
    assert _v(-0.1, 0.5).reproduces == "inconclusive"
    assert _v(-0.5, -0.1).reproduces == "no"
    assert _v(-0.5, -0.1, direction="less").reproduces == "yes"
    assert _v(1.1, 1.5, null=1.0).reproduces == "yes" and _v(0.5, 0.9, null=1.0).reproduces == "no"
    assert _v(0.1, 0.5).estimate == pytest.approx(0.3) and _v(0.1, 0.5).n == 48


def test_self_judged_verdict_is_never_yes():
    v = _v(0.1, 0.5, self_judged=True)
    assert v.reproduces == "inconclusive" and v.label == "inconclusive (self-judged)"
    assert _v(-0.5, -0.1, self_judged=True).reproduces == "no"


def test_expect_checks_the_prose_against_the_interval():
    assert _v(0.1, 0.5).expect("yes").reproduces == "yes"
    with pytest.raises(AssertionError, match="the text says 'yes'"):
        _v(-0.1, 0.5).expect("yes")
    with pytest.raises(ValueError, match="words"):
        _v(0.1, 0.5).expect("reproduces")


def test_across_metrics():
    assert across_metrics([_v(0.1, 0.5), _v(0.2, 0.3)]) == "yes"
    assert across_metrics([_v(0.1, 0.5), _v(-0.2, 0.3)]) == "depends on the metric"
    with pytest.raises(ValueError):
        across_metrics([])


def test_verdict_bad_input():
    with pytest.raises(ValueError, match="judge"):
        Verdict("c", "m", " ", Interval(0, 0, 0, 1))
    with pytest.raises(TypeError, match="Interval"):
        Verdict("c", "m", "j", (0, 0, 0))
    with pytest.raises(ValueError, match="claim must be"):
        _v(0.1, 0.2, direction="up")


def test_verdict_table_text_and_html():
    i = Interval(0.146, 0.02, 0.32, 48, seeds=3)
    t = verdict_table([Verdict("rare < full", "share <x>", "judge-net", i), _v(-0.1, 0.5, self_judged=True)])
    text = str(t)
    head, first, second = text.splitlines()
    assert head.split()[:4] == ["claim", "metric", "judge", "n"] and "95% CI" in head
    assert "48 x 3 seeds" in first and "0.15 [0.02, 0.32]" in first and first.rstrip().endswith("yes")
    assert second.endswith("inconclusive (self-judged)")
    html = t._repr_html_()
    assert html.count("<tr>") == 3 and "share &lt;x&gt;" in html and "<th" in html


def test_table_alignment_and_errors():
    t = Table([Column("name"), Column("value", ">", 8)], [["a", "1.0"], ["long name", "22.5"]], title="T")
    assert str(t).splitlines() == ["T", "name         value", "a              1.0", "long name     22.5"]
    assert repr(t) == str(t) and "<caption>T</caption>" in t._repr_html_()
    with pytest.raises(ValueError, match="row 0 has 1 cells"):
        Table([Column("a"), Column("b")], [["x"]])
    with pytest.raises(TypeError, match="formatted strings"):
        Table([Column("a")], [[1.0]])
    with pytest.raises(TypeError, match="Column"):
        Table(["a"], [])
    with pytest.raises(ValueError, match="align"):
        Column("a", "^")


def test_a_share_prints_at_the_precision_its_items_support():
    from dpmlatent.evidence import Interval, as_share

    iv = Interval(0.546, 0.476, 0.6095, 256, seeds=3)
    assert str(iv).startswith("0.546 [0.476, 0.6")                      # a tenth of the half-width: 3 decimals
    share = as_share(iv)                                   # 768 items: 0.5 / sqrt(768) = 0.018 -> 2 decimals
    assert str(share) == "0.55 [0.48, 0.61]" and share.resolution == pytest.approx(0.5 / 768 ** 0.5)
    assert str(as_share(Interval(0.5, 0.49, 0.51, 100_000))) == "0.500 [0.490, 0.510]"   # the interval is coarser
    with pytest.raises(TypeError, match="Interval"):
        as_share(0.5)


def test_a_scaled_interval_scales_every_number():
    from dpmlatent.evidence import Interval, as_share

    iv = as_share(Interval(0.5, 0.4, 0.7, 64, seeds=3, method="bca"))
    half = iv.scaled(0.5)
    assert (half.estimate, half.low, half.high, half.resolution) == (0.25, 0.2, 0.35, iv.resolution * 0.5)
    assert (half.n, half.seeds, half.method, half.level) == (64, 3, "bca", 0.95)
    for bad in (0.0, -1.0, float("inf"), True):
        with pytest.raises(ValueError, match="factor"):
            iv.scaled(bad)


# --- the bias-corrected jackknife (the interval of a Frechet distance) --------------------------

def _fd_world(dim, equal=False, seed=0):
    """The known-truth world of benchmarks/fd_interval_coverage.py, with a reference of 500."""
    from dpmlatent import metrics
    return metrics.simulated_fd_difference(dim, equal=equal, reference_size=500,
                                           generator=torch.Generator().manual_seed(seed))


def test_simulated_fd_world_is_reproducible_and_checks_its_input():
    from dpmlatent import metrics
    (r1, t1, d1), (r2, t2, d2) = _fd_world(4), _fd_world(4)
    assert t1 == t2 and all(torch.equal(x, y) for x, y in zip(d1(5, 2), d2(5, 2)))
    assert d1(5, 2)[0].shape == (5, 2, 4)
    ref, truth, _ = _fd_world(4, equal=True)                 # equal covariances: only the means differ
    mu_a, mu_b = torch.tensor([0.4, 0, 0, 0], dtype=torch.float64), torch.tensor([0, 0.2, 0, 0], dtype=torch.float64)
    assert truth == pytest.approx(float(((mu_a - ref.mean) ** 2).sum() - ((mu_b - ref.mean) ** 2).sum()), abs=1e-9)
    with pytest.raises(ValueError, match="dim"):
        metrics.simulated_fd_difference(1)
    with pytest.raises(ValueError, match="reference_size"):
        metrics.simulated_fd_difference(3, reference_size=1)


def test_jackknife_of_a_mean_is_the_textbook_interval():
    from dpmlatent.evidence import jackknife_ci
    x = torch.tensor([1.0, 2.0, 4.0, 7.0], dtype=torch.float64)
    loo = (x.sum() - x) / 3
    iv = jackknife_ci(float(x.mean()), loo, level=0.95, seeds=2)
    se = float(x.std() / 2)                                # the mean is unbiased: nothing to correct
    assert iv.estimate == pytest.approx(3.5) and iv.half_width == pytest.approx(1.959964 * se, rel=1e-6)
    assert (iv.n, iv.seeds, iv.method) == (4, 2, "jackknife")


@pytest.mark.parametrize("equal", [False, True], ids=["unequal-covariances", "equal-covariances"])
def test_jackknife_fd_difference_covers_the_truth_where_the_plain_estimate_does_not(equal):
    # 32-dimensional features, 64 inputs x 3 seeds, 300 data sets (Monte Carlo s.e. of a 95% coverage: 1.3
    # points). With unequal covariances FD's bias differs between the methods: an interval of the same
    # width around the plain estimate misses the truth most of the time; the bias-corrected one covers.
    from dpmlatent.evidence import jackknife_ci
    ref, truth, draw = _fd_world(32, equal)
    hits = plain = 0
    for _ in range(300):
        fa, fb = draw()
        est = ref(fa.reshape(-1, 32)) - ref(fb.reshape(-1, 32))
        iv = jackknife_ci(est, ref.leave_one_out(fa) - ref.leave_one_out(fb))
        hits += iv.contains(truth)
        plain += est - iv.half_width <= truth <= est + iv.half_width
    assert 0.92 <= hits / 300 <= 0.995
    if not equal:
        assert plain / 300 < 0.6


def test_unpaired_jackknife_adds_the_variances():
    from dpmlatent.evidence import jackknife_ci, unpaired_jackknife_ci
    g = torch.Generator().manual_seed(3)
    xa, xb = torch.randn(30, generator=g, dtype=torch.float64), torch.randn(50, generator=g, dtype=torch.float64) + 1
    pa, pb = (float(xa.mean()), (xa.sum() - xa) / 29), (float(xb.mean()), (xb.sum() - xb) / 49)
    d, ia, ib = unpaired_jackknife_ci(pa, pb), jackknife_ci(*pa), jackknife_ci(*pb)
    assert d.estimate == pytest.approx(ia.estimate - ib.estimate) and d.n == 30
    assert d.half_width == pytest.approx((ia.half_width ** 2 + ib.half_width ** 2) ** 0.5)


def test_jackknife_bad_input():
    from dpmlatent.evidence import jackknife_ci, unpaired_jackknife_ci
    with pytest.raises(ValueError, match="leave_one_out"):
        jackknife_ci(1.0, torch.zeros(1))
    with pytest.raises(ValueError, match="non-finite"):
        jackknife_ci(1.0, torch.tensor([1.0, float("nan")]))
    with pytest.raises(TypeError, match="estimate"):
        jackknife_ci(float("inf"), torch.zeros(3))
    with pytest.raises(ValueError, match="level"):
        jackknife_ci(1.0, torch.zeros(3), level=1.5)
    with pytest.raises(TypeError, match="pair"):
        unpaired_jackknife_ci(1.0, (1.0, torch.zeros(3)))
