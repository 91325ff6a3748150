"""The zoo's model kinds: one registry entry and one module each; the shared training loop;
shipped checkpoints load bit for bit."""

import json

import pytest
import torch

from dpmlatent import fitting, train, zoo


def test_every_zoo_entry_has_a_kind_whose_module_defines_the_four_hooks():
    assert {e.kind for e in zoo.ZOO.values()} <= set(zoo.KINDS)
    for name, kind in zoo.KINDS.items():
        assert kind.name == name
        module = kind.hooks()
        for hook in ("make", "fit", "save", "load"):
            assert callable(getattr(module, hook)), (name, hook)
    assert zoo.kind_of("t2i-digits").image_unet and not zoo.kind_of("digit-judge").image_unet
    with pytest.raises(ValueError, match="unknown model"):
        zoo.kind_of("vae")


def _stored_tensors(folder):
    """Every tensor in the checkpoint's safetensors files, keyed by file and name."""
    from safetensors.torch import load_file

    return {(f.relative_to(folder).as_posix(), k): v for f in sorted(folder.rglob("*.safetensors"))
            for k, v in load_file(f).items()}


def _loaded_tensors(model, folder):
    """The loaded model's state dict under the same (file, name) keys as :func:`_stored_tensors`."""
    if isinstance(model, tuple):                                   # CLIP: (model, tokenizer)
        return {("open_clip_model.safetensors", k): v for k, v in model[0].state_dict().items()}
    if (folder / "model.safetensors").is_file():                   # classifiers, GANs, LRDMs
        return {("model.safetensors", k): v for k, v in model.state_dict().items()}
    parts = {"unet": model.unet, "text_encoder": getattr(model, "text_encoder", None)}   # pipelines, latent priors
    return {(f"{part}/{'model' if part == 'text_encoder' else 'diffusion_pytorch_model'}.safetensors", k): v
            for part, m in parts.items() if m is not None for k, v in m.state_dict().items()}


@pytest.mark.parametrize("name", zoo.names())
def test_shipped_checkpoints_load_bit_for_bit(name):
    """The files match the sha256 sums of their manifests (``verify``), and every weight the model
    holds after ``zoo.load`` is exactly the stored one (float16 files are widened exactly)."""
    folder = zoo.verify(name)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert set(manifest["sha256"]) >= {p for p, _ in _stored_tensors(folder)}
    stored, loaded = _stored_tensors(folder), _loaded_tensors(zoo.load(name), folder)
    missing = set(stored) - set(loaded)
    # tied or derived buffers that a model rebuilds instead of reading (e.g. position ids) may be absent
    # from the files, but every stored tensor must be in the model
    assert not missing, sorted(missing)[:5]
    for key, value in stored.items():
        got = loaded[key]
        assert got.shape == value.shape, key
        assert torch.equal(got.to(value.dtype), value) and torch.equal(value.to(got.dtype), got), key


def test_fit_runs_the_steps_in_order_and_logs(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 1)
    ema = fitting.EMA([net], 0.5)
    start = ema.copies[0].weight.clone()
    x, y = torch.randn(16, 3), torch.randn(16, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    calls = []

    def loss_fn():
        loss = ((net(x) - y) ** 2).mean()
        return loss, {"half": loss.item() / 2}

    losses, history = fitting.fit(loss_fn, opt, steps=5, ema=ema, after_step=lambda: calls.append(1),
                                  progress=False)
    assert len(losses) == 5 and losses == history["loss"] and len(calls) == 5
    assert history["half"] == pytest.approx([v / 2 for v in losses])
    assert losses[-1] < losses[0]
    # the average moved from the initial weights towards the trained ones, and is frozen
    assert not torch.equal(ema.copies[0].weight, start) and not ema.copies[0].weight.requires_grad
    losses, _ = fitting.fit(loss_fn, opt, steps=2, record="half", progress=False)
    assert len(losses) == 2
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        fitting.fit(loss_fn, opt, steps=0)
    with pytest.raises(ValueError, match="ema_decay must be in"):
        fitting.EMA([net], 1.0)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        fitting.check_steps(1, 0)


def test_build_goes_through_the_kind_and_writes_its_facts(tmp_path):
    path = train.build("domain-classifier", steps=2, root=tmp_path, progress=False)
    info = zoo.manifest("domain-classifier", root=tmp_path)
    assert path == tmp_path / "domain-classifier"
    assert info["steps"] == 2 and 0 <= info["test_accuracy"] <= 1 and info["dataset"] == "digits-domain"
    model = zoo.load("domain-classifier", root=tmp_path)
    assert model.config.num_classes == 2 and not model.training


def test_train_reexports_the_kinds_training_loops():
    from dpmlatent import classifier, clip, diffusion, gan, text_to_image

    assert train.train_diffusion is diffusion.train_diffusion and train.train_gan is gan.train_gan
    assert train.train_classifier is classifier.train_classifier and train.train_clip is clip.train_clip
    assert train.train_text_to_image is text_to_image.train_text_to_image and train.TrainResult is fitting.TrainResult
    with pytest.raises(AttributeError, match="no attribute 'train_vae'"):
        train.train_vae
