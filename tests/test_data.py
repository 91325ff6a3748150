import pytest
import torch

from dpmlatent import data

SETS = [data.handwritten_digits, data.typeset_digits, data.typeset_letters]


@pytest.mark.parametrize("fn", SETS)
def test_shapes_ranges_labels(fn):
    train, test = fn("train"), fn("test")
    for d in (train, test):
        assert d.images.dtype == torch.float32
        assert d.images.shape[1:] == (1, 8, 8)
        assert d.images.min() >= -1 and d.images.max() <= 1
        assert d.images.max() == 1 and d.images.min() == -1
        assert len(d.labels) == len(d.images) == len(d.styles)
        assert set(d.labels.tolist()) == set(range(10))
    n_all = len(fn("all").labels)
    assert len(train.labels) + len(test.labels) == n_all
    assert abs(len(test.labels) / n_all - 0.2) < 0.01


@pytest.mark.parametrize("fn", SETS)
def test_deterministic_and_seeded(fn):
    a, b = fn("train", seed=0), fn("train", seed=0)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    c = fn("train", seed=1)
    assert not torch.equal(a.images, c.images)


def test_train_test_disjoint():
    full = data.handwritten_digits("all")
    train, test = data.handwritten_digits("train"), data.handwritten_digits("test")
    flat = {tuple(x.flatten().tolist()) for x in test.images}
    overlap = sum(tuple(x.flatten().tolist()) in flat for x in train.images)
    # load_digits contains a few exact duplicates; the split itself never repeats an index
    assert overlap < 10
    assert len(full.labels) == 1797


def test_typeset_uses_several_fonts_and_differs_from_handwritten():
    ty = data.typeset_digits("all")
    assert len(set(ty.styles)) == len(data.FONTS)
    hw = data.handwritten_digits("all")
    # related but distinct domains: class means differ clearly
    diff = (ty.images[ty.labels == 1].mean(0) - hw.images[hw.labels == 1].mean(0)).abs().mean()
    assert diff > 0.05


def test_letters_are_not_digits():
    le, ty = data.typeset_letters("all"), data.typeset_digits("all")
    assert not torch.equal(le.images, ty.images)


@pytest.mark.parametrize("name", data.TOY_NAMES)
def test_toy_2d(name):
    x = data.toy_2d(name, 500, seed=3)
    assert x.shape == (500, 2) and x.dtype == torch.float32
    assert x.abs().max() < 1.5
    assert torch.equal(x, data.toy_2d(name, 500, seed=3))


def test_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        data.handwritten_digits("validation")
    with pytest.raises(ValueError, match="per_class"):
        data.typeset_digits(per_class=0)
    with pytest.raises(ValueError, match="name"):
        data.toy_2d("spiral", 10)
    with pytest.raises(ValueError, match="n must"):
        data.toy_2d("ring", 0)


def test_rare_class_digits():
    from dpmlatent.data import RARE_CLASS, rare_class_digits

    full, rare = data.handwritten_digits("train"), rare_class_digits("train")
    counts = torch.bincount(rare.labels, minlength=10)
    assert abs(counts[RARE_CLASS].item() / len(rare.labels) - 0.02) < 0.002
    others = [c for c in range(10) if c != RARE_CLASS]
    assert torch.equal(counts[others], torch.bincount(full.labels, minlength=10)[others])   # every other image kept
    assert torch.equal(rare_class_digits("test").images, data.handwritten_digits("test").images)
    with pytest.raises(ValueError, match="fraction"):
        rare_class_digits(fraction=0.5)
    with pytest.raises(ValueError, match="rare_class"):
        rare_class_digits(rare_class=10)
