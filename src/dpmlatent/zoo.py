"""The model zoo: small models trained here, shipped as checkpoints, rebuildable.

Each diffusion model is stored in diffusers' own pipeline layout, so the real loading
code path (``DDPMPipeline.from_pretrained``) is what the book uses::

    checkpoints/<name>/model_index.json
    checkpoints/<name>/unet/{config.json, diffusion_pytorch_model.safetensors}
    checkpoints/<name>/scheduler/scheduler_config.json
    checkpoints/<name>/manifest.json      # sha256 of every file + how it was trained

The classifiers and the GAN generators are ``config.json`` + ``model.safetensors`` + ``manifest.json``; the CLIP model is
open_clip's ``local-dir`` layout (``open_clip_config.json`` + ``open_clip_model.safetensors``); an LRDM is
``config.json`` + ``model.safetensors`` (float16) + ``scheduler/``; a latent prior is a pipeline folder plus
``standardisation.json``.
Rebuild any entry with ``python -m dpmlatent.train NAME``.

**Model kinds.** Each entry's ``kind`` names a :class:`Kind` in :data:`KINDS`: the module that
knows how to make, train, save and load that kind of model. A kind's module defines

* ``make(entry, train) -> model``: a freshly initialised model (weights from ``entry.seed``);
* ``fit(model, train, entry, *, steps, progress) -> TrainResult``: train it through the shared loop
  :func:`dpmlatent.fitting.fit` (``result.info`` adds facts to the manifest);
* ``save(model, folder)``: write its files; ``load(folder, *, device, dtype) -> model``: read them back.

A new kind of model is that module plus one line in :data:`KINDS`; ``python -m dpmlatent.train``
(:func:`dpmlatent.train.build`) and :func:`load` need no change.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from .diffusion import make_scheduler, make_unet, unet_config

__all__ = [
    "ZooEntry", "ZOO", "Kind", "KINDS", "kind_of", "names", "load", "checkpoint_root", "CheckpointError",
    "unet_config", "make_unet", "make_scheduler", "save_checkpoint", "verify", "manifest", "load_pretrained",
    "load_pipeline", "quiet_loading", "write_config_and_weights", "read_config_and_weights",
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
    ZooEntry("lrdm-kl1e-4", "lrdm", "handwritten", 0, 6000,
             "LRDM (dpmlatent.lrdm) on handwritten digits, lambda = 1e-4: a representation r (16x2x2) "
             "from an encoder, KL to N(0, I), conditions an x0-predicting UNet", (("kl_weight", 1e-4),)),
    ZooEntry("lrdm-kl1e-3", "lrdm", "handwritten", 0, 6000,
             "LRDM on handwritten digits, lambda = 1e-3", (("kl_weight", 1e-3),)),
    ZooEntry("lrdm-kl1e-2", "lrdm", "handwritten", 0, 6000,
             "LRDM on handwritten digits, lambda = 1e-2", (("kl_weight", 1e-2),)),
    ZooEntry("lrdm-kl1e-1", "lrdm", "handwritten", 0, 6000,
             "LRDM on handwritten digits, lambda = 1e-1", (("kl_weight", 1e-1),)),
    ZooEntry("lrdm-kl1e-2-warmup", "lrdm", "handwritten", 0, 6000,
             "LRDM, lambda = 1e-2 reached by a linear KL warm-up over the first 2,000 steps",
             (("kl_weight", 1e-2), ("kl_warmup", 2000))),
    ZooEntry("lrdm-class-kl1e-3", "lrdm", "handwritten", 0, 6000,
             "Class-conditional LRDM (the digit label to encoder and UNet), lambda = 1e-3",
             (("kl_weight", 1e-3), ("num_classes", 10))),
    ZooEntry("lrdm-kl1e-3-prior", "latent-diffusion", "handwritten", 0, 4000,
             "A DDPM on lrdm-kl1e-3's standardised posterior means (Diff-AE's second stage): codes that "
             "follow the data instead of N(0, I)", (("lrdm", "lrdm-kl1e-3"),)),
    ZooEntry("identity-fonts", "identity", "fonts-embedding", 0, 3000,
             "Identity embedding (CNN, 32-d unit vectors, CosFace head) of typeface individuals, trained on the "
             "embedding faces only: the identity energy's model"),
    ZooEntry("identity-fonts-judge", "identity", "fonts-embedding", 1, 3000,
             "Independent identity judge: an MLP embedding (another architecture, another seed) trained like "
             "identity-fonts; it never defines an energy", (("arch", "mlp"),)),
    ZooEntry("ddpm-fonts-zipf", "diffusion", "fonts-zipf", 0, 6000,
             "DDPM on digits drawn by 40 typeface individuals with Zipf frequencies (the most frequent draws "
             "40 glyphs per digit, the rarest 1): the identity-coverage experiment"),
    ZooEntry("gan-fonts-zipf", "gan", "fonts-zipf", 0, 4000,
             "The DCGAN on the same Zipf typeface data: the identity-coverage experiment's GAN"),
)}


@dataclasses.dataclass(frozen=True)
class Kind:
    """A kind of zoo model: ``module`` (under ``dpmlatent``) defines its ``make`` / ``fit`` / ``save`` /
    ``load`` (see the module docstring); ``image_unet``: the model has an image ``.unet`` that
    :func:`load`'s ``memory_format`` applies to."""

    name: str
    module: str
    description: str
    image_unet: bool = False

    def hooks(self):
        """The kind's module (imported on first use, so loading one kind never imports the others)."""
        return importlib.import_module(f"dpmlatent.{self.module}")


#: The model kinds of the zoo, one entry each.
KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("diffusion", "diffusion", "8x8 digit DDPM (diffusers DDPMPipeline)", image_unet=True),
    Kind("diffusion-2d", "diffusion", "DDPM on 2-D points stored as 2x1x1 images (DDPMPipeline)"),
    Kind("classifier", "classifier", "CNN or MLP classifier of 8x8 images (DigitClassifier)"),
    Kind("text-to-image", "text_to_image", "pixel text-to-image model (PixelTextToImagePipeline)", image_unet=True),
    Kind("clip", "clip", "tiny open_clip CLIP, returned as (model, tokenizer)"),
    Kind("gan", "gan", "DCGAN generator (Generator)"),
    Kind("lrdm", "lrdm", "diffusion model conditioned on a sampled representation r (LRDM)", image_unet=True),
    Kind("latent-diffusion", "latent_prior", "DDPM on an LRDM's representations r (Diff-AE's second stage)"),
    Kind("identity", "identity", "typeface identity embedding: unit vectors (IdentityEmbedding)"),
)}


class CheckpointError(RuntimeError):
    """A checkpoint file is missing or corrupted; the message says how to rebuild it."""


def names(kind: str | None = None) -> list[str]:
    """Names of the shipped models, optionally only those of ``kind`` (one of :data:`KINDS`:
    8x8 digit "diffusion" models, the "diffusion-2d" toy model, the classifiers, the
    "text-to-image" model, the "clip" model, the "gan" generators)."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be None or one of {tuple(KINDS)}, got {kind!r}")
    return [n for n, e in ZOO.items() if kind is None or e.kind == kind]


def checkpoint_root() -> Path:
    """``$DPMLATENT_CHECKPOINTS`` if set, else the repository's ``checkpoints/`` folder."""
    env = os.environ.get("DPMLATENT_CHECKPOINTS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "checkpoints"


def _entry(name: str) -> ZooEntry:
    if name not in ZOO:
        raise ValueError(f"unknown model {name!r}; the zoo has {names()}")
    return ZOO[name]


def kind_of(name: str) -> Kind:
    """The :class:`Kind` of zoo model ``name``."""
    return KINDS[_entry(name).kind]


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
        ``(model, tokenizer)`` of :func:`dpmlatent.clip.load_clip` (open_clip's own loading of a
        ``local-dir`` folder; stored in float16, computed in float32 unless ``dtype`` says otherwise);
        for a GAN, its :class:`dpmlatent.gan.Generator`.

    Raises:
        ValueError: unknown name.
        CheckpointError: missing or corrupted file (the message names the file and the
            command that rebuilds it).
    """
    entry = _entry(name)
    kind = KINDS[entry.kind]
    if memory_format is not None:
        if not isinstance(memory_format, torch.memory_format):
            raise TypeError(f"memory_format must be a torch.memory_format, got {type(memory_format).__name__}")
        if memory_format not in (torch.channels_last, torch.contiguous_format):
            raise ValueError(f"memory_format must be torch.channels_last or torch.contiguous_format, got {memory_format}")
        if not kind.image_unet:
            raise ValueError(f"memory_format applies to the image UNets (kinds "
                             f"{tuple(k for k, v in KINDS.items() if v.image_unet)}); {name!r} is a {entry.kind} model")
    model = kind.hooks().load(verify(name, root), device=device, dtype=dtype)
    if memory_format is not None:
        model.unet.to(memory_format=memory_format)
    return model


@contextlib.contextmanager
def quiet_loading():
    """Silence diffusers' and transformers' progress bars while a local checkpoint loads (milliseconds)."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    was_enabled = diffusers_logging.is_progress_bar_enabled()
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            diffusers_logging.enable_progress_bar()
        transformers_logging.enable_progress_bar()


def write_config_and_weights(config, model: torch.nn.Module, folder: Path) -> None:
    """The checkpoint layout of the classifiers and GANs: ``config.json`` (the dataclass ``config``)
    + ``model.safetensors`` (``model``'s state dict)."""
    from safetensors.torch import save_file

    (Path(folder) / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, Path(folder) / "model.safetensors")


def read_config_and_weights(folder: Path, config_cls, model_cls) -> torch.nn.Module:
    """The inverse of :func:`write_config_and_weights`: ``model_cls(config_cls(**config.json))``
    holding the stored weights."""
    from safetensors.torch import load_file

    model = model_cls(config_cls(**json.loads((Path(folder) / "config.json").read_text())))
    model.load_state_dict(load_file(Path(folder) / "model.safetensors"))
    return model


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
