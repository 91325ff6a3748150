"""dpmlatent.directions: mean-difference directions and edits at matched faithfulness."""

import pytest
import torch

from dpmlatent.directions import matched_direction, mean_difference


def test_mean_difference_is_the_difference_of_group_means_along_the_sample_axis():
    codes = torch.arange(12.0).view(4, 3)
    pos, neg = torch.tensor([True, True, False, False]), torch.tensor([False, False, True, False])
    assert torch.equal(mean_difference(codes, pos, neg), codes[:2].mean(0) - codes[2])
    # the sample axis can be any axis: (steps, N, ...) bottlenecks with dim=1
    stacked = torch.stack([codes, 2 * codes])                                  # (2, 4, 3)
    d = mean_difference(stacked, pos, neg, dim=1)
    assert d.shape == (2, 3) and torch.equal(d[1], 2 * d[0])
    # a random fraction of each group: seeded, and different seeds can differ
    big = torch.randn(100, 5, generator=torch.Generator().manual_seed(0))
    p, q = torch.arange(100) < 50, torch.arange(100) >= 50
    a = mean_difference(big, p, q, fraction=0.5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, mean_difference(big, p, q, fraction=0.5, generator=torch.Generator().manual_seed(1)))
    assert not torch.equal(a, mean_difference(big, p, q, fraction=0.5, generator=torch.Generator().manual_seed(2)))
    assert not torch.equal(a, mean_difference(big, p, q))
    with pytest.raises(ValueError, match="positive must be"):
        mean_difference(codes, pos[:3], neg)
    with pytest.raises(ValueError, match="selects no example"):
        mean_difference(codes, torch.zeros(4, dtype=torch.bool), neg)
    with pytest.raises(ValueError, match="must not share"):
        mean_difference(codes, pos, pos)
    with pytest.raises(ValueError, match="fraction"):
        mean_difference(codes, pos, neg, fraction=0.0)


def test_matched_direction_brackets_the_level_between_two_scales(tmp_path):
    from dpmlatent.classifier import ClassifierConfig, DigitClassifier
    from dpmlatent.edit_experiment import edit_scores, edit_task

    task = edit_task("weight", num_images=6)
    torch.manual_seed(0)
    clf, dom = DigitClassifier().eval(), DigitClassifier(ClassifierConfig(num_classes=2)).eval()
    directions = {s: torch.randn(1, 8, 8, generator=torch.Generator().manual_seed(s)) for s in (0, 1)}

    def edit(direction, scale):                       # a toy space: the pixels themselves
        return (task.images + scale * direction).clamp(-1, 1)

    def direct(scale, seed):
        return edit_scores(task, edit(directions[seed], scale), digit_classifier=clf, domain_classifier=dom)

    ssim = {k: float(torch.stack([direct(k * 0.1, s)["ssim"] for s in (0, 1)]).mean()) for k in (3, 4)}
    assert ssim[3] > ssim[4]
    level = (ssim[3] + ssim[4]) / 2
    p = matched_direction(edit, task, directions, level, digit_classifier=clf, domain_classifier=dom,
                          scale_step=0.1, max_scale=2.0, start=1.0)
    assert p.steps == (3, 4) and p.weight == pytest.approx(0.5)
    assert p.strength * 2.0 == pytest.approx(0.35)
    assert float(p.values("ssim").mean()) == pytest.approx(level, abs=1e-12)
    assert torch.equal(p.hi["ink"][1], direct(0.4, 1)["ink"])
    from dpmlatent import metrics                 # features for an FD at the matched point, per input and seed
    f = matched_direction(edit, task, directions, level, digit_classifier=clf, domain_classifier=dom,
                          scale_step=0.1, max_scale=2.0, start=1.0, feature_network=clf)
    assert f.steps == p.steps and f.hi["features"].shape == (6, 2, metrics.classify(clf, task.images)[1].shape[1])
    assert torch.equal(f.hi["features"][:, 1], metrics.classify(clf, edit(directions[1], 0.4))[1].double())
    assert "features" not in p.hi and f.scores == p.scores
    from dpmlatent.run_store import RunStore   # through a store: recorded, read back with two runs re-made
    kw = dict(digit_classifier=clf, domain_classifier=dom, scale_step=0.1, max_scale=2.0, start=1.0, label="pixels")
    rec = RunStore.open(tmp_path / "runs")
    p_rec = matched_direction(edit, task, directions, level, store=rec, **kw)
    rec.save(rebuild="test")
    read = RunStore.open(tmp_path / "runs", check=2)
    p_read = matched_direction(edit, task, directions, level, store=read, **kw)
    assert p_rec.steps == p_read.steps == p.steps and all(torch.equal(p_rec.hi[c], p_read.hi[c]) for c in p.hi)
    assert torch.allclose(p_rec.hi["ssim"], p.hi["ssim"], atol=1e-3) and read.summary().checked == 2
    with pytest.raises(KeyError, match="not in the store"):          # another label: other runs
        matched_direction(edit, task, directions, level, store=read, **{**kw, "label": "other"})
    with pytest.raises(ValueError, match="whole multiple"):
        matched_direction(edit, task, directions, level, digit_classifier=clf, domain_classifier=dom,
                          scale_step=0.3, max_scale=2.0)
    with pytest.raises(ValueError, match="directions must be"):
        matched_direction(edit, task, {}, level, digit_classifier=clf, domain_classifier=dom, scale_step=0.1,
                          max_scale=2.0)
    with pytest.raises(TypeError, match="edit must be callable"):
        matched_direction(None, task, directions, level, digit_classifier=clf, domain_classifier=dom,
                          scale_step=0.1, max_scale=2.0)
