"""Intervals and verdict words (chapter 6's coverage claim)."""

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
