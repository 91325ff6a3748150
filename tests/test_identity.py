"""dpmlatent.identity (typeface embedding, verification) and data.font_individuals."""

import pytest
import torch

from dpmlatent import data
from dpmlatent.identity import (IdentityConfig, IdentityEmbedding, roc_auc, threshold_at_far, train_identity,
                                verification_pairs)


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
