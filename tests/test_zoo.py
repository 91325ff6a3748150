import json

import pytest
import torch
from diffusers import DDPMPipeline

from dpmlatent import train, zoo
from dpmlatent.classifier import DigitClassifier


def _save_pipe(tmp_path, unet):
    pipe = DDPMPipeline(unet=unet, scheduler=zoo.make_scheduler())
    return zoo.save_checkpoint("ddpm-handwritten", pipe.save_pretrained, {"seed": 0}, tmp_path)


def test_diffusion_round_trip_identical_outputs(tmp_path, tiny_unet, caplog):
    _save_pipe(tmp_path, tiny_unet)
    pipe = zoo.load("ddpm-handwritten", root=tmp_path)
    assert not pipe.unet.training
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([10, 500, 999])
    with torch.no_grad():
        assert torch.equal(pipe.unet(x, t).sample, tiny_unet(x, t).sample)
    assert pipe.scheduler.config.beta_schedule == "squaredcos_cap_v2"
    # a float64 load (chapter 7) holds the same weights, cast at load time, without diffusers' warning
    from diffusers.utils import logging as diffusers_logging
    diffusers_logging.enable_propagation()
    try:
        with caplog.at_level("WARNING"):
            pipe64 = zoo.load("ddpm-handwritten", root=tmp_path, dtype=torch.float64)
    finally:
        diffusers_logging.disable_propagation()
    assert "kept in float32" not in caplog.text
    assert all(p.dtype == torch.float64 and torch.equal(p.float(), q)
               for p, q in zip(pipe64.unet.parameters(), tiny_unet.parameters()))
    manifest = json.loads((tmp_path / "ddpm-handwritten" / "manifest.json").read_text())
    assert manifest["rebuild"] == "python -m dpmlatent.train ddpm-handwritten"


def test_channels_last_load_agrees_with_the_default_layout(tmp_path, tiny_unet):
    _save_pipe(tmp_path, tiny_unet)
    x, t = torch.randn(3, 1, 8, 8, dtype=torch.float64), torch.tensor([10, 500, 999])
    outs = {}
    for fmt in (None, torch.channels_last):
        pipe = zoo.load("ddpm-handwritten", root=tmp_path, dtype=torch.float64, memory_format=fmt)
        conv = pipe.unet.down_blocks[0].resnets[0].conv1.weight      # (C, C, 3, 3): the layouts differ
        assert conv.is_contiguous(memory_format=fmt or torch.contiguous_format)
        assert fmt is None or not conv.is_contiguous()
        x_in = x.clone().requires_grad_(True)
        out = pipe.unet(x_in, t).sample
        out.square().sum().backward()
        outs[fmt] = out.detach(), x_in.grad
    # only the order of the sums inside each convolution changes: forward and input gradient agree to rounding
    for a, b in zip(outs[None], outs[torch.channels_last]):
        assert torch.allclose(a, b, rtol=0, atol=1e-12)
    with pytest.raises(TypeError, match="memory_format must be a torch.memory_format"):
        zoo.load("ddpm-handwritten", root=tmp_path, memory_format="channels_last")
    with pytest.raises(ValueError, match="memory_format must be torch.channels_last"):
        zoo.load("ddpm-handwritten", root=tmp_path, memory_format=torch.channels_last_3d)
    with pytest.raises(ValueError, match="applies to the image UNets"):
        zoo.load("digit-classifier", memory_format=torch.channels_last)


def test_classifier_round_trip(tmp_path):
    result = train.train_classifier(DigitClassifier(), train.training_data("digits-mixed"),
                                    steps=3, progress=False)
    train_dir = tmp_path
    from safetensors.torch import save_file

    def write(folder):
        (folder / "config.json").write_text(json.dumps({"num_classes": 10, "width": 32,
                                                        "feature_dim": 128, "dropout": 0.2}))
        save_file(result.model.state_dict(), folder / "model.safetensors")

    zoo.save_checkpoint("digit-classifier", write, {}, train_dir)
    loaded = zoo.load("digit-classifier", root=train_dir)
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded(x), result.model(x))


def test_corrupted_checkpoint_names_file_and_command(tmp_path, tiny_unet):
    folder = _save_pipe(tmp_path, tiny_unet)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-10] ^= 0xFF
    weights.write_bytes(bytes(raw))
    with pytest.raises(zoo.CheckpointError) as err:
        zoo.load("ddpm-handwritten", root=tmp_path)
    msg = str(err.value)
    assert "corrupted" in msg and str(weights) in msg
    assert "python -m dpmlatent.train ddpm-handwritten" in msg


def test_missing_checkpoint(tmp_path, tiny_unet):
    with pytest.raises(zoo.CheckpointError, match="python -m dpmlatent.train ddpm-typeset"):
        zoo.load("ddpm-typeset", root=tmp_path)
    folder = _save_pipe(tmp_path, tiny_unet)
    (folder / "scheduler" / "scheduler_config.json").unlink()
    with pytest.raises(zoo.CheckpointError, match="scheduler_config.json"):
        zoo.load("ddpm-handwritten", root=tmp_path)


def test_interrupted_write_leaves_nothing(tmp_path, tiny_unet):
    _save_pipe(tmp_path, tiny_unet)
    before = (tmp_path / "ddpm-handwritten" / "manifest.json").read_text()

    def crash(folder):
        (folder / "half.bin").write_bytes(b"x" * 10)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        zoo.save_checkpoint("ddpm-handwritten", crash, {}, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["ddpm-handwritten"]
    assert (tmp_path / "ddpm-handwritten" / "manifest.json").read_text() == before


def test_unknown_name():
    with pytest.raises(ValueError, match="unknown model"):
        zoo.load("stable-diffusion")
    with pytest.raises(ValueError, match="kind"):
        zoo.names("vae")


def test_rebuild_command_is_deterministic(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    train.main(["ddpm-handwritten", "--steps", "2", "--root", str(a)])
    train.main(["ddpm-handwritten", "--steps", "2", "--root", str(b)])
    ma = json.loads((a / "ddpm-handwritten" / "manifest.json").read_text())["sha256"]
    mb = json.loads((b / "ddpm-handwritten" / "manifest.json").read_text())["sha256"]
    assert ma == mb
    pipe = zoo.load("ddpm-handwritten", root=a)
    assert sum(p.numel() for p in pipe.unet.parameters()) > 1_000_000
    info = zoo.manifest("ddpm-handwritten", root=a)
    assert info["steps"] == 2 and info["train_seconds"] > 0 and info["rebuild"] == "python -m dpmlatent.train ddpm-handwritten"
    (a / "ddpm-handwritten" / "unet" / "config.json").write_text("{}")
    with pytest.raises(zoo.CheckpointError, match="corrupted"):
        zoo.manifest("ddpm-handwritten", root=a)


@pytest.mark.slow
@pytest.mark.parametrize("name", zoo.names())
def test_shipped_checkpoints_load_and_fit_budget(name):
    folder = zoo.verify(name)
    for f in folder.rglob("*"):
        assert f.stat().st_size <= 5 * 2**20, f
    model = zoo.load(name)
    if isinstance(model, tuple):      # the CLIP model comes with its tokenizer
        model = model[0]
    unet = getattr(model, "unet", None)
    assert (unet if unet is not None else model).training is False


def test_load_pretrained_from_a_saved_pipeline_folder(tmp_path, tiny_unet, x0):
    """The scale-up path of chapter 4 (``load_pretrained`` + ``cycle_translate``) on a pipeline
    written offline with ``save_pretrained``: reload is exact and the pair translates."""
    from diffusers import DDIMScheduler, DDPMPipeline

    from dpmlatent.cycle import check_same_schedule, cycle_translate

    DDPMPipeline(unet=tiny_unet, scheduler=zoo.make_scheduler()).save_pretrained(tmp_path / "a")
    a, b = zoo.load_pretrained(tmp_path / "a"), zoo.load_pretrained(str(tmp_path / "a"), dtype=torch.float64)
    for p, q in zip(a.unet.parameters(), tiny_unet.parameters()):
        assert torch.equal(p, q)
    assert b.unet.dtype == torch.float64 and not a.unet.training
    check_same_schedule(a.scheduler, b.scheduler)
    sched = DDIMScheduler.from_config(a.scheduler.config)
    out = cycle_translate(a.unet, a.unet, sched, x0, eta=0.1, strength=0.7, num_inference_steps=8,
                          generator=torch.Generator().manual_seed(0))
    assert (out - x0).abs().max() <= 1e-5
    with pytest.raises(TypeError, match="name_or_path"):
        zoo.load_pretrained(3)
    with pytest.raises(FileNotFoundError, match="no pipeline folder"):
        zoo.load_pretrained(tmp_path / "missing")
