"""The matched-faithfulness method on synthetic runs whose scores are known in closed form."""

import pytest
import torch

from dpmlatent import metrics
from dpmlatent.matching import (MatchedPoint, checked_difference, first_guess, interpolation_error, match_level,
                                matched_difference, strength_of_steps)


def _run(n_inputs=40, slope=0.02, offset=0.0):
    """ssim(k) = 0.9 - slope k (+ a per-input and per-seed wiggle), score "a" = k / 10 + noise,
    features move with k; every call is logged."""
    calls = []
    g = torch.Generator().manual_seed(0)
    wiggle = 0.01 * torch.randn(n_inputs, generator=g, dtype=torch.float64)

    def run(k, seed):
        calls.append((k, seed))
        gs = torch.Generator().manual_seed(1000 * seed + k)
        noise = 0.005 * torch.randn(n_inputs, generator=gs, dtype=torch.float64)
        return {"ssim": 0.9 - slope * k + wiggle + noise,
                "a": k / 10 + offset + noise,
                "features": torch.randn(n_inputs, 3, generator=gs, dtype=torch.float64) + k / 10}
    return run, calls


def test_strength_of_steps_runs_exactly_k_steps():
    for n in (10, 50, 100):
        for k in range(1, n + 1):
            assert min(int(n * strength_of_steps(k, n)), n) == k
    with pytest.raises(ValueError, match="k and n must be integers"):
        strength_of_steps(0, 10)


def test_match_level_finds_the_bracket_and_interpolates():
    run, calls = _run()
    p = match_level(run, 0.5, num_inference_steps=50, seeds=(0, 1, 2), start=0.5, name="m")
    assert p.steps == (19, 20) and p.method == "m" and p.seeds == 3          # 0.9 - 0.02 k = 0.5 at k = 20
    assert float(p.values("ssim").mean()) == pytest.approx(0.5, abs=1e-12)
    assert 0 <= p.weight <= 1 and 19 / 50 <= p.strength <= 20 / 50
    assert p.values("a").shape == (3, 40) and p.lo["features"].shape == (40, 3, 3)
    assert set(p.scores) == {"ssim", "a"}
    # the neighbours are the direct runs, and the probe holds three consecutive step counts on seed 0
    assert torch.equal(p.lo["a"][1], run(19, 1)["a"]) and sorted(p.probe) == [19, 20, 21]
    assert p.runs == len(set(calls))                                         # each (k, seed) run once
    # "a" is linear in k and ssim nearly so: the interpolation check is tiny, the bracket change is 0.1
    assert p.interpolation_error("a") < 0.01
    assert p.bracket_change("a") == pytest.approx(0.1, abs=0.01)
    ref = metrics.FrechetReference(torch.randn(200, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64))
    assert p.frechet(ref) == pytest.approx((1 - p.weight) * ref(p.lo["features"].reshape(-1, 3))
                                           + p.weight * ref(p.hi["features"].reshape(-1, 3)))
    assert p.interpolation_error("frechet", ref) >= 0
    assert p.interpolation_error("a", ref) == p.interpolation_error("a")     # the reference is for FD only
    # a difference of two methods: both points' errors added
    assert interpolation_error(p, p, "a") == 2 * p.interpolation_error("a")
    assert interpolation_error(p, p, "frechet", reference=ref) == 2 * p.interpolation_error("frechet", ref)
    with pytest.raises(TypeError, match="MatchedPoint"):
        interpolation_error(p, None, "a")


def test_match_level_runs_a_deterministic_method_once_per_step_count():
    run, calls = _run()
    seed_free = lambda k, seed: run(k, 0)                                    # noqa: E731 - ignores its seed
    p = match_level(seed_free, 0.5, num_inference_steps=50, seeds=(0, 1, 2), start=0.5, deterministic=True)
    walked = len(calls)
    q = match_level(seed_free, 0.5, num_inference_steps=50, seeds=(0, 1, 2), start=0.5)
    # the same point as running every seed, from a third of the runs
    assert p.steps == q.steps and p.weight == q.weight and p.probe.keys() == q.probe.keys()
    for score in ("ssim", "a"):
        assert torch.equal(p.values(score), q.values(score))
    assert torch.equal(p.lo["features"], q.lo["features"])
    assert p.runs == walked == len({k for k, _ in calls}) and q.runs == walked + 2 * 2   # + 2 seeds x 2 neighbours
    with pytest.raises(TypeError, match="deterministic must be True or False"):
        match_level(run, 0.5, num_inference_steps=50, deterministic=1)


def test_match_level_rejects_what_it_cannot_match():
    run, _ = _run()
    with pytest.raises(ValueError, match="does not reach mean ssim 0.95"):
        match_level(run, 0.95, num_inference_steps=50, seeds=(0,), start=0.1)
    with pytest.raises(ValueError, match="no bracket for ssim 0.5 within 3 steps"):
        match_level(run, 0.5, num_inference_steps=50, seeds=(0,), start=0.0, max_moves=3)
    with pytest.raises(ValueError, match=r"level must be a faithfulness in \(0, 1\)"):
        match_level(run, 1.0, num_inference_steps=50)
    with pytest.raises(ValueError, match="seeds must be"):
        match_level(run, 0.5, num_inference_steps=50, seeds=())
    with pytest.raises(TypeError, match="run must be callable"):
        match_level(None, 0.5, num_inference_steps=50)
    with pytest.raises(ValueError, match="must return a dict with 'psnr'"):
        match_level(run, 0.5, num_inference_steps=50, faithfulness="psnr")
    p = match_level(run, 0.5, num_inference_steps=50, seeds=(0,), start=0.4)
    with pytest.raises(ValueError, match="score must be one of"):
        p.values("b")
    with pytest.raises(ValueError, match="needs the FD reference"):
        p.interpolation_error("frechet")


def test_matched_difference_is_paired_and_recovers_a_known_offset():
    run_a, _ = _run()
    run_b, _ = _run(offset=0.05)                     # same noise, score "a" shifted by 0.05
    kw = dict(num_inference_steps=50, seeds=(0, 1, 2), start=0.4)
    a, b = match_level(run_a, 0.5, **kw), match_level(run_b, 0.5, **kw)
    d = matched_difference(b, a, "a")
    assert d.estimate == pytest.approx(0.05) and d.low == pytest.approx(0.05) and d.high == pytest.approx(0.05)
    assert d.seeds == 3 and d.n == 40
    ref = metrics.FrechetReference(torch.randn(200, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64))
    f = matched_difference(a, a, "frechet", reference=ref, n_resamples=200)
    assert f.estimate == 0 and f.seeds == 3
    with pytest.raises(TypeError, match="FrechetReference"):
        matched_difference(a, b, "frechet")
    short, _ = _run(n_inputs=30)
    with pytest.raises(ValueError, match="share inputs and seeds"):
        matched_difference(a, match_level(short, 0.5, **kw), "a")
    with pytest.raises(TypeError, match="MatchedPoint"):
        matched_difference(a, 1, "a")


def test_checked_difference_returns_the_interval_only_where_interpolation_errs_less_than_it_is_wide():
    kw = dict(num_inference_steps=50, seeds=(0, 1, 2), start=0.4)
    a = match_level(_run()[0], 0.5, **kw, name="a")
    run_b, _ = _run(offset=0.05)                     # an offset of 0.05 that differs by seed: a half-width > 0
    b = match_level(lambda k, seed: {**run_b(k, seed), "a": run_b(k, seed)["a"] + 0.05 * seed}, 0.5, **kw, name="b")
    d = checked_difference(b, a, "a", generator=torch.Generator().manual_seed(0))
    assert d == matched_difference(b, a, "a", generator=torch.Generator().manual_seed(0))
    assert d.half_width > interpolation_error(b, a, "a") and d.contains(0.1)
    # a score that jumps between neighbouring step counts: reading it between them is not reliable
    j = match_level(lambda k, seed: {**run_b(k, seed), "a": run_b(k, seed)["a"] + (k % 2) + 0.05 * seed}, 0.5, **kw,
                    name="jumpy")
    with pytest.raises(ValueError, match=r"jumpy - a \(a\): the interpolation check .* not below the interval's half-width"):
        checked_difference(j, a, "a")


def test_first_guess_interpolates_with_the_input_as_anchor():
    assert first_guess([0.3, 0.5], [0.6, 0.4], 0.5) == pytest.approx(0.4)
    assert first_guess([0.3, 0.5], [0.6, 0.4], 0.8) == pytest.approx(0.15)     # between (0, 1) and (0.3, 0.6)
    assert first_guess([0.3, 0.5], [0.6, 0.4], 0.2) == pytest.approx(0.5)      # beyond the sweep: its end
    assert first_guess([0.3], [0.6], 0.8) == pytest.approx(0.15)
    with pytest.raises(ValueError, match="distinct"):
        first_guess([0.3, 0.3], [0.6, 0.5], 0.5)
    # without the anchor a level above the sweep's most faithful point clamps to its strength
    assert first_guess([0.3, 0.5], [0.6, 0.4], 0.8, anchor=False) == pytest.approx(0.3)
    assert first_guess([0.3, 0.5], [0.6, 0.4], 0.5, anchor=False) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="at least 2"):
        first_guess([0.3], [0.6], 0.5, anchor=False)


def test_strength_for_ssim_reads_one_methods_coarse_curve():
    from types import SimpleNamespace

    from dpmlatent.translation import strength_for_ssim
    rows = [SimpleNamespace(method=m, strength=s, ssim=q) for m, s, q in
            (("a", 0.3, 0.8), ("a", 0.5, 0.6), ("a", 0.7, 0.5), ("b", 0.3, 0.4), ("b", 0.5, 0.3))]
    assert strength_for_ssim(rows, "a", 0.7) == pytest.approx(0.4)
    assert strength_for_ssim(rows, "a", 0.9) == pytest.approx(0.3)          # clamped to the curve's ends
    assert strength_for_ssim(rows, "a", 0.1) == pytest.approx(0.7)
    assert strength_for_ssim(rows, "b", 0.35) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="at least two strengths of method 'c'"):
        strength_for_ssim(rows, "c", 0.5)
