import collections

import pytest
import torch

from dpmlatent import text, train, zoo
from dpmlatent.text_to_image import PixelTextToImagePipeline, make_pipeline


def test_caption_grammar():
    assert text.caption(7, "typeset", "bold") == "a bold typeset seven"
    assert text.caption(0, "handwritten") == "a handwritten zero"
    assert text.caption(2, "handwritten", "thin") == "a thin handwritten two"
    with pytest.raises(ValueError, match=r"digit must be an integer in \[0, 9\]"):
        text.caption(10, "typeset")
    with pytest.raises(ValueError, match="domain must be one of"):
        text.caption(1, "printed")
    with pytest.raises(ValueError, match="weight must be one of"):
        text.caption(1, "typeset", "heavy")


def test_stroke_weights_split_each_class_in_thirds():
    images = torch.linspace(-1, 1, 30).view(30, 1, 1, 1).expand(30, 1, 8, 8)
    labels = torch.arange(30) % 2
    w = text.stroke_weights(images, labels)
    for k in (0, 1):
        counts = collections.Counter(w[i] for i in range(30) if labels[i] == k)
        assert counts == {"thin": 5, "regular": 5, "bold": 5}
    # within a class, more ink is never thinner
    order = {"thin": 0, "regular": 1, "bold": 2}
    ranks = [order[w[i]] for i in range(0, 30, 2)]
    assert ranks == sorted(ranks)


def test_captioned_digits_and_tokenizer():
    d = text.captioned_digits("test")
    assert len(d.captions) == len(d) == len(d.images)
    assert d.captions[0].startswith("a ") and d.captions[0].split()[-1] in text.DIGIT_WORDS
    tok = text.build_tokenizer()
    lengths = {len(tok(c).input_ids) for c in set(d.captions)}
    assert max(lengths) <= tok.model_max_length
    ids = tok("", padding="max_length", max_length=tok.model_max_length).input_ids
    assert ids[0] == tok.bos_token_id and set(ids[1:]) == {tok.eos_token_id} and tok.pad_token_id == tok.eos_token_id
    assert len(tok) == 512 + 3000 + 2
    with pytest.raises(ValueError, match="num_merges"):
        text.build_tokenizer(num_merges=0)


def test_encode_prompts_shape_and_type_errors():
    pipe = make_pipeline(0)
    states = text.encode_prompts(pipe.text_encoder, pipe.tokenizer, ["a handwritten one", ""])
    assert states.shape == (2, pipe.tokenizer.model_max_length, pipe.text_encoder.config.hidden_size)
    assert pipe.unet.config.cross_attention_dim == states.shape[-1]
    with pytest.raises(TypeError, match="list of strings"):
        text.encode_prompts(pipe.text_encoder, pipe.tokenizer, "a handwritten one")


def test_train_text_to_image_returns_ema_pipeline():
    pipe = make_pipeline(0)
    data = text.captioned_digits("test")
    result = train.train_text_to_image(pipe, data, steps=3, batch_size=8, progress=False)
    assert len(result.losses) == 3 and isinstance(result.model, PixelTextToImagePipeline)
    assert result.model.unet is not pipe.unet and not result.model.unet.training
    with pytest.raises(ValueError, match="p_uncond"):
        train.train_text_to_image(pipe, data, steps=1, p_uncond=1.0)


def test_text_to_image_zoo_round_trip(tmp_path):
    path = train.build("t2i-digits", steps=2, root=tmp_path, progress=False)
    for f in path.rglob("*.safetensors"):
        assert f.stat().st_size <= 5 * 2**20, f
    pipe = zoo.load("t2i-digits", root=tmp_path)
    assert isinstance(pipe, PixelTextToImagePipeline)
    assert pipe.unet.dtype == torch.float32 and pipe.text_encoder.dtype == torch.float32
    a = pipe(["a bold typeset seven"] * 2, num_inference_steps=4, generator=torch.Generator().manual_seed(0))
    b = pipe(["a bold typeset seven"] * 2, num_inference_steps=4, generator=torch.Generator().manual_seed(0))
    assert a.shape == (2, 1, 8, 8) and torch.equal(a, b) and a.abs().max() <= 1.0 + 1e-6


def test_text_to_image_quality_table_on_a_random_pipeline():
    from dpmlatent.classifier import ClassifierConfig, DigitClassifier
    from dpmlatent.text_to_image import FAMILIES, family_prompts, format_quality_table, text_to_image_quality

    prompts, labels = family_prompts("typeset", "bold", 2)
    assert prompts[:3] == ["a bold typeset zero", "a bold typeset zero", "a bold typeset one"]
    assert labels.tolist() == [d for d in range(10) for _ in range(2)]
    torch.manual_seed(0)
    digit, domain = DigitClassifier().eval(), DigitClassifier(ClassifierConfig(num_classes=2)).eval()
    rows = text_to_image_quality(make_pipeline(0), digit, domain, per_digit=1, num_inference_steps=2,
                                 families=FAMILIES[:3], progress=False)
    assert [r.family for r in rows] == ["handwritten", "typeset", "thin handwritten"]
    for r in rows:
        assert 0 <= r.digit_accuracy <= 1 and 0 <= r.domain_accuracy <= 1 and r.ink_ratio > 0 and r.num_real > 10
    assert rows[2].num_real < rows[0].num_real   # a weight family is a subset of its domain
    assert str(format_quality_table(rows)).count("\n") == 3
    with pytest.raises(ValueError, match="per_digit"):
        text_to_image_quality(make_pipeline(0), digit, domain, per_digit=0)
