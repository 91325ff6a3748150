import math

import pytest
import torch

from dpmlatent.reporting import decimals_for, fmt, fmt_bound, fmt_fraction, noise_floor, share_column


def test_noise_is_a_bound_and_real_errors_keep_their_digits():
    assert fmt_bound(8.3e-07) == "< 1e-05" and fmt_bound(8.9e-07) == "< 1e-05"  # the two CPUs agree
    assert fmt_bound(0.0) == "< 1e-05"
    assert fmt_bound(6.3e-2) == "0.063"
    assert fmt_bound(2.5e-3) == "0.0025"
    assert fmt_bound(3e-4) == "3.0e-04"
    assert fmt_bound(3e-12, dtype=torch.float64) == "< 1e-10"
    assert fmt_bound(3e-8, dtype=torch.float64) == "3.0e-08"
    assert fmt_bound(torch.tensor(2e-3), floor=1e-2) == "< 1e-02"
    assert fmt_bound(6.3e-2, relation=True) == "= 0.063" and fmt_bound(1e-7, relation=True) == "< 1e-05"


def test_noise_floor_per_dtype():
    assert noise_floor(torch.float32) == 1e-5 and noise_floor(torch.float64) == 1e-10
    assert noise_floor(torch.float16) > noise_floor(torch.float32)
    with pytest.raises(TypeError, match="dtype"):
        noise_floor(torch.int64)


@pytest.mark.parametrize("bad", [-1e-3, math.nan, math.inf])
def test_fmt_bound_rejects_non_errors(bad):
    with pytest.raises(ValueError, match="value"):
        fmt_bound(bad)
    with pytest.raises(ValueError, match="floor"):
        fmt_bound(1e-3, floor=0)


def test_precision_follows_the_uncertainty():
    assert [decimals_for(u) for u in (0.067, 0.4, 3.0, 250.0, 0.0099)] == [2, 1, 0, 0, 3]
    assert fmt(0.6875, 0.067) == "0.69" and fmt(23.71, 0.4) == "23.7" and fmt(1234.5, 30) == "1234"
    with pytest.raises(ValueError, match="uncertainty"):
        fmt(1.0, 0.0)


def test_fractions_of_48_get_two_decimals_and_of_10000_three():
    assert fmt_fraction(0.6875, 48) == "0.69"
    assert fmt_fraction(0.6875, 10_000) == "0.688"
    assert fmt_fraction(1.0, 4) == "1.0"
    with pytest.raises(ValueError, match="n must"):
        fmt_fraction(0.5, 0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fmt_fraction(1.5, 10)


def test_share_column_aligns_and_needs_the_sample_size():
    assert share_column(0.6875, 64, 7) == "   0.69" and share_column(0.6875, 10_000, 7) == "  0.688"
    with pytest.raises(ValueError, match="class kept: the row does not record how many items"):
        share_column(0.5, None, 7, name="class kept")
