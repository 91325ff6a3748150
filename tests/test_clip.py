"""The tiny CLIP (open_clip classes): its loss, the rebuild command, loading, zero-shot accuracy."""

import json
import math

import pytest
import torch

from dpmlatent import train, zoo
from dpmlatent.clip import contrastive_loss, make_clip, zero_shot_accuracy


def test_contrastive_loss_treats_equal_captions_as_positives():
    emb = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), dim=-1)
    same = torch.tensor([[1, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=torch.bool)
    scale = torch.tensor(math.log(100.0))
    # rows 0 and 1 share a caption: their logits are equal, the soft target is uniform over them, so
    # the loss is ~ log 2 for those rows and ~ 0 for row 2 (both directions).
    assert contrastive_loss(emb, emb, scale, same).item() == pytest.approx(2 * math.log(2) / 3, abs=1e-3)
    # CLIP's hard targets would call row 1 a negative of row 0 and pay more
    assert contrastive_loss(emb, emb, scale, torch.eye(3, dtype=torch.bool)).item() > 0.4
    with pytest.raises(ValueError, match="true diagonal"):
        contrastive_loss(emb, emb, scale, torch.zeros(3, 3, dtype=torch.bool))


def test_clip_rebuild_load_and_zero_shot(tmp_path):
    from dpmlatent.text import captioned_digits

    train.main(["clip-digits", "--steps", "2", "--root", str(tmp_path)])
    manifest = json.loads((tmp_path / "clip-digits" / "manifest.json").read_text())
    assert manifest["stored_dtype"] == "float16" and set(manifest["zero_shot_test_accuracy"]) == {"digit", "domain", "weight"}
    model, tokenizer = zoo.load("clip-digits", root=tmp_path)
    assert not model.training and next(model.parameters()).dtype == torch.float32
    assert tokenizer(["a bold typeset seven"]).shape == (1, 16)
    test = captioned_digits("test")
    acc = zero_shot_accuracy(model, tokenizer, test)
    assert acc == pytest.approx(manifest["zero_shot_test_accuracy"], abs=1e-4)   # measured on the stored weights
    fresh, _ = make_clip(0)
    assert sum(p.numel() for p in fresh.parameters()) == sum(p.numel() for p in model.parameters())


@pytest.mark.slow
def test_shipped_clip_reads_digits_zero_shot():
    from dpmlatent.text import captioned_digits

    model, tokenizer = zoo.load("clip-digits")
    acc = zero_shot_accuracy(model, tokenizer, captioned_digits("test"))
    assert acc["digit"] >= 0.8 and acc["domain"] >= 0.9
