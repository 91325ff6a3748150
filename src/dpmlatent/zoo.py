"""The model zoo: small models trained here, shipped as checkpoints, rebuildable.

Each diffusion model is stored in diffusers' own pipeline layout, so the real loading
code path (``DDPMPipeline.from_pretrained``) is what the book uses::

    checkpoints/<name>/model_index.json
    checkpoints/<name>/unet/{config.json, diffusion_pytorch_model.safetensors}
    checkpoints/<name>/scheduler/scheduler_config.json
    checkpoints/<name>/manifest.json      # sha256 of every file + how it was trained

The classifiers and the GAN generators are ``config.json`` + ``model.safetensors`` + ``manifest.json``; the CLIP model is
open_clip's ``local-dir`` layout (``open_clip_config.json`` + ``open_clip_model.safetensors``).
Rebuild any entry with ``python -m dpmlatent.train NAME``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

__all__ = [
    "ZooEntry", "ZOO", "names", "load", "checkpoint_root", "CheckpointError",
    "unet_config", "make_unet", "make_scheduler", "save_checkpoint", "verify", "manifest", "load_pretrained",
    "load_pipeline",
]


@dataclasses.dataclass(frozen=True)
class ZooEntry:
    """One shipped model: what it is and how ``python -m dpmlatent.train`` rebuilds it."""

    name: str
    kind: str          # one of KINDS
    dataset: str       # see dpmlatent.train.DATASETS
    seed: int
    steps: int
    description: str
    config: tuple = ()  # extra architecture options as (key, value) pairs, e.g. (("arch", "mlp"),)


ZOO: dict[str, ZooEntry] = {e.name: e for e in (
    ZooEntry("ddpm-handwritten", "diffusion", "handwritten", 0, 6000,
             "DDPM on scikit-learn's handwritten digits (train split)"),
    ZooEntry("ddpm-typeset", "diffusion", "typeset-digits", 0, 6000,
             "DDPM on digits typeset in matplotlib's fonts (train split)"),
    ZooEntry("ddpm-handwritten-seed1", "diffusion", "handwritten", 1, 6000,
             "DDPM on handwritten digits again, from another seed (for the shared-latent chapter)"),
    ZooEntry("ddpm-letters", "diffusion", "typeset-letters", 0, 6000,
             "DDPM on typeset letters A-J: an unrelated domain of the same format (a control)"),
    ZooEntry("digit-classifier", "classifier", "digits-mixed", 0, 3000,
             "CNN classifier of digits 0-9, trained on handwritten + typeset digits"),
    ZooEntry("digit-judge", "classifier", "digits-mixed", 1, 3000,
             "Independent judge of digits 0-9: an MLP on pixels (another architecture, another seed), "
             "trained like digit-classifier; it never defines an energy, a loss or a selection",
             (("arch", "mlp"),)),
    ZooEntry("domain-classifier", "classifier", "digits-domain", 0, 1500,
             "CNN telling handwritten (0) from typeset (1) digits: the realism metric of translation"),
    ZooEntry("ddpm-toy-moons", "diffusion-2d", "toy-moons", 0, 4000,
             "DDPM on 2-D two moons (each point a 2x1x1 'image'), for trajectory pictures"),
    ZooEntry("ddpm-handwritten-rare", "diffusion", "handwritten-rare", 0, 6000,
             "DDPM on handwritten digits where sevens are rare (2% of the data): the coverage experiment"),
    ZooEntry("gan-handwritten", "gan", "handwritten", 0, 4000,
             "DCGAN on handwritten digits: the GAN of the guidance chapter (latent code N(0, I_32))"),
    ZooEntry("gan-handwritten-rare", "gan", "handwritten-rare", 0, 4000,
             "The same DCGAN on the rare-seven digits: the coverage experiment's GAN"),
    ZooEntry("clip-digits", "clip", "digits-captioned", 0, 3000,
             "Tiny CLIP (open_clip classes, custom config): a 2-layer ViT and a 2-layer text transformer "
             "trained contrastively on captioned handwritten and typeset digits; the CLIP energy's default"),
    ZooEntry("t2i-digits", "text-to-image", "digits-captioned", 0, 5000,
             "Text-to-image: UNet2DConditionModel + tiny CLIPTextModel on captioned handwritten and "
             "typeset digits ('a bold typeset seven'), caption dropout 10% for guidance"),
)}

KINDS = ("diffusion", "diffusion-2d", "classifier", "text-to-image", "clip", "gan")


class CheckpointError(RuntimeError):
    """A checkpoint file is missing or corrupted; the message says how to rebuild it."""


def names(kind: str | None = None) -> list[str]:
    """Names of the shipped models, optionally only those of ``kind`` (one of :data:`KINDS`:
    8x8 digit "diffusion" models, the "diffusion-2d" toy model, the classifiers, the
    "text-to-image" model, the "clip" model, the "gan" generators)."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be None or one of {KINDS}, got {kind!r}")
    return [n for n, e in ZOO.items() if kind is None or e.kind == kind]


def checkpoint_root() -> Path:
    """``$DPMLATENT_CHECKPOINTS`` if set, else the repository's ``checkpoints/`` folder."""
    env = os.environ.get("DPMLATENT_CHECKPOINTS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "checkpoints"


def _entry(name: str) -> ZooEntry:
    if name not in ZOO:
        raise ValueError(f"unknown model {name!r}; the zoo has {names()}")
    return ZOO[name]


def unet_config(dataset: str = "handwritten") -> dict:
    """The ``UNet2DModel`` config of the zoo's diffusion models.

    8x8x1 digits: channels (32, 64, 64), one ResNet layer per block, self-attention only at
    2x2 (1.1M parameters). 2-D toy data (``dataset`` starting with ``"toy-"``): a point is a
    2x1x1 image and the UNet a single 1x1 level (3x3 convolutions on 1x1 act as linear layers),
    so the same samplers and encoders run on it unchanged.
    """
    if dataset.startswith("toy-"):
        return dict(sample_size=1, in_channels=2, out_channels=2, layers_per_block=2,
                    block_out_channels=(64,), down_block_types=("DownBlock2D",),
                    up_block_types=("UpBlock2D",), norm_num_groups=8)
    return dict(
        sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
        block_out_channels=(32, 64, 64),
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        norm_num_groups=8, attention_head_dim=32,
    )


def make_unet(seed: int = 0, dataset: str = "handwritten"):
    """A freshly initialised zoo ``UNet2DModel`` for ``dataset`` (weights drawn from ``seed``)."""
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    return UNet2DModel(**unet_config(dataset))


def make_scheduler():
    """The noise schedule stored with every zoo model: 1000-step cosine DDPM, eps-prediction.

    Load it as a ``DDIMScheduler`` with ``DDIMScheduler.from_config(pipe.scheduler.config)``.
    """
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                         prediction_type="epsilon", clip_sample=True)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_checkpoint(name: str, write, info: dict, root: Path | None = None) -> Path:
    """Write a checkpoint atomically.

    ``write(tmpdir)`` fills a temporary folder next to the target; a ``manifest.json``
    with the sha256 of every file and ``info`` is added; then the folder is renamed into
    place, so an interrupted run never leaves a half-written checkpoint.
    """
    root = Path(root) if root is not None else checkpoint_root()
    root.mkdir(parents=True, exist_ok=True)
    target = root / name
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=root))
    try:
        write(tmp)
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        manifest = {"name": name, "rebuild": f"python -m dpmlatent.train {name}", **info,
                    "sha256": {p.relative_to(tmp).as_posix(): _sha256(p) for p in files}}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{name}.old-", dir=root))
            os.replace(target, old / name)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def verify(name: str, root: Path | None = None) -> Path:
    """Check that ``name``'s files exist and match its manifest; return its folder.

    Raises:
        CheckpointError: naming the missing or corrupted file and the rebuild command.
    """
    _entry(name)
    folder = (Path(root) if root is not None else checkpoint_root()) / name
    fix = f"rebuild it with `python -m dpmlatent.train {name}`"
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise CheckpointError(f"checkpoint {name!r} is missing: {manifest_path} not found; {fix}")
    try:
        manifest = json.loads(manifest_path.read_text())
        expected = manifest["sha256"]
    except (ValueError, KeyError) as err:
        raise CheckpointError(f"checkpoint {name!r} is corrupted: {manifest_path} is not a "
                              f"valid manifest ({err}); {fix}") from err
    for rel, digest in expected.items():
        path = folder / rel
        if not path.is_file():
            raise CheckpointError(f"checkpoint {name!r} is missing {path}; {fix}")
        if _sha256(path) != digest:
            raise CheckpointError(f"checkpoint {name!r} is corrupted: {path} does not match "
                                  f"the sha256 in its manifest; {fix}")
    return folder


def manifest(name: str, root: Path | None = None) -> dict:
    """``name``'s manifest (after :func:`verify`): how it was trained, e.g. ``seed``, ``steps``,
    ``train_seconds`` (wall-clock seconds of the training run), ``torch_threads``, ``rebuild``."""
    return json.loads((verify(name, root) / "manifest.json").read_text())


def load(name: str, *, device: torch.device | str | None = None,
         dtype: torch.dtype | None = None, root: Path | None = None,
         memory_format: torch.memory_format | None = None):
    """Load a shipped model in eval mode, after checking its files.

    ``memory_format`` (diffusion and text-to-image models only) lays the UNet's weights out in
    ``torch.channels_last`` or ``torch.contiguous_format`` (the default). Channels-last changes only
    the order of the sums inside each convolution (results agree to rounding) and, on a CPU, makes the
    float64 UNet of chapters 6 and 7 about 1.25 times faster forward + backward and the float32 UNet
    3-12% faster (forward; forward + backward) in ``benchmarks/throughput.py``.

    Returns:
        For a diffusion model, a diffusers ``DDPMPipeline`` (``.unet``, ``.scheduler``)
        loaded with ``DDPMPipeline.from_pretrained``; for the text-to-image model a
        :class:`dpmlatent.text_to_image.PixelTextToImagePipeline` (``.unet``, ``.text_encoder``,
        ``.tokenizer``, ``.scheduler``: a DDIMScheduler); for a classifier, a
        :class:`dpmlatent.classifier.DigitClassifier`; for the CLIP model, the pair
        ``(model, tokenizer)`` of :func:`dpmlatent.energies.load_clip` (open_clip's own loading of a
        ``local-dir`` folder; stored in float16, computed in float32 unless ``dtype`` says otherwise);
        for a GAN, its :class:`dpmlatent.gan.Generator`.

    Raises:
        ValueError: unknown name.
        CheckpointError: missing or corrupted file (the message names the file and the
            command that rebuilds it).
    """
    entry = _entry(name)
    if memory_format is not None:
        if not isinstance(memory_format, torch.memory_format):
            raise TypeError(f"memory_format must be a torch.memory_format, got {type(memory_format).__name__}")
        if memory_format not in (torch.channels_last, torch.contiguous_format):
            raise ValueError(f"memory_format must be torch.channels_last or torch.contiguous_format, got {memory_format}")
        if entry.kind not in ("diffusion", "text-to-image"):
            raise ValueError(f"memory_format applies to the image UNets (diffusion and text-to-image models); "
                             f"{name!r} is a {entry.kind} model")
    folder = verify(name, root)
    if entry.kind in ("diffusion", "diffusion-2d", "text-to-image"):
        from diffusers import DDPMPipeline
        from diffusers.utils import logging as diffusers_logging
        from transformers.utils import logging as transformers_logging

        from .text_to_image import PixelTextToImagePipeline

        # the dtype goes to from_pretrained, not to .to(): diffusers warns on casting a loaded model
        kwargs = {"low_cpu_mem_usage": False}
        if entry.kind == "text-to-image":  # stored in float16 to keep files small; compute in float32
            cls, kwargs["dtype"] = PixelTextToImagePipeline, dtype or torch.float32
        else:
            cls = DDPMPipeline
            if dtype is not None:
                kwargs["dtype"] = dtype
        was_enabled = diffusers_logging.is_progress_bar_enabled()
        diffusers_logging.disable_progress_bar()  # a local load takes milliseconds
        transformers_logging.disable_progress_bar()
        try:
            model = cls.from_pretrained(folder, **kwargs)
        finally:
            if was_enabled:
                diffusers_logging.enable_progress_bar()
            transformers_logging.enable_progress_bar()
        model.unet.eval()
        if entry.kind == "text-to-image":
            model.text_encoder.eval()
        if device is not None:
            model.to(device=device)
        if memory_format is not None:
            model.unet.to(memory_format=memory_format)
        return model
    if entry.kind == "clip":
        from .energies import load_clip

        model, tokenizer = load_clip(folder)
        return model.to(device=device, dtype=dtype).eval(), tokenizer
    from safetensors.torch import load_file

    from .classifier import ClassifierConfig, DigitClassifier
    from .gan import GANConfig, Generator

    config_cls, model_cls = (GANConfig, Generator) if entry.kind == "gan" else (ClassifierConfig, DigitClassifier)
    config = config_cls(**json.loads((folder / "config.json").read_text()))
    model = model_cls(config)
    model.load_state_dict(load_file(folder / "model.safetensors"))
    return model.to(device=device, dtype=dtype).eval()


def _hub_id_or_folder(name_or_path):
    """Check ``name_or_path``: a local path (a ``Path``, or a string starting with ``/``, ``.`` or
    ``~``) must be an existing folder (it is never sent to the hub); anything else is a hub id."""
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"name_or_path must be a hub id or a folder path, got {type(name_or_path).__name__}")
    if isinstance(name_or_path, os.PathLike) or str(name_or_path).startswith(("/", ".", "~")):
        folder = Path(name_or_path).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"no pipeline folder at {folder} (expected the output of save_pretrained)")
        return folder
    return name_or_path


def load_pretrained(name_or_path: str | os.PathLike, *, device: torch.device | str | None = None,
                    dtype: torch.dtype | None = None):
    """Load any unconditional diffusers ``DDPMPipeline`` checkpoint: a hub id such as
    ``"google/ddpm-cat-256"`` (downloads on first use) or a local folder written by
    ``save_pretrained``. This is the scale-up path of the chapters; the zoo's own models go
    through :func:`load`, which also checks their sha256 sums.

    Returns:
        The pipeline in eval mode on ``device`` / ``dtype``.

    Raises:
        TypeError: ``name_or_path`` is not a string or path.
        FileNotFoundError: a local path (a ``Path``, or a string starting with ``/``, ``.`` or
            ``~``) that does not exist; it is not sent to the hub.
        OSError: a hub id that cannot be found or downloaded (diffusers' own message).
    """
    from diffusers import DDPMPipeline

    pipe = DDPMPipeline.from_pretrained(_hub_id_or_folder(name_or_path))
    pipe.unet.eval()
    if device is not None or dtype is not None:
        pipe.to(device=device, dtype=dtype)
    return pipe


def load_pipeline(name_or_path: str | os.PathLike, *, device: torch.device | str | None = None,
                  dtype: torch.dtype | None = None):
    """Load any Stable Diffusion checkpoint as a diffusers ``StableDiffusionPipeline``: a hub id
    such as ``"stable-diffusion-v1-5/stable-diffusion-v1-5"`` (downloads on first use) or a local
    ``save_pretrained`` folder. The safety checker is not loaded (the book edits digits and
    reader-supplied photos; add it back with ``StableDiffusionPipeline.from_pretrained`` if you need it).

    Raises:
        TypeError: ``name_or_path`` is not a string or path.
        FileNotFoundError: a local path (as in :func:`load_pretrained`) that does not exist.
        OSError: a hub id that cannot be found or downloaded (diffusers' own message).
    """
    from diffusers import StableDiffusionPipeline

    kwargs = {"safety_checker": None, "requires_safety_checker": False}
    if dtype is not None:
        kwargs["dtype"] = dtype
    pipe = StableDiffusionPipeline.from_pretrained(_hub_id_or_folder(name_or_path), **kwargs)
    return pipe.to(device) if device is not None else pipe
