"""The book's data sets: small, bundled with installed packages, deterministic from a seed.

Every image set is returned as an :class:`ImageData` whose ``images`` are float32
tensors of shape ``(N, 1, 8, 8)`` with values in ``[-1, 1]`` (``-1`` is background,
``+1`` full ink), so that all domains share one format and one model architecture.

* :func:`handwritten_digits` — scikit-learn's bundled ``load_digits`` (1797 images, 8x8,
  grey levels 0..16), the "real photographs" of this book.
* :func:`typeset_digits` — 0-9 rendered with the TrueType fonts matplotlib ships
  (several families and weights) under a small random affine jitter, then box-filtered
  to 8x8: a related but distinct domain.
* :func:`typeset_letters` — A-J from the same renderer: same format, unrelated content
  (the control domain of the translation chapters).
* :func:`toy_2d` — 2-D point clouds (two moons, a ring of Gaussians) for trajectory plots.

The working resolution is the native 8x8 of ``load_digits``: on a 2-core CPU a
``UNet2DModel`` trains about 4x faster there than at 16x16 (3.3 vs 0.8 steps/s at batch
128). Display with nearest-neighbour upscaling (:func:`dpmlatent.plotting.show_images`).
"""

from __future__ import annotations

import functools
import math
import os
from typing import NamedTuple

import numpy as np
import torch

__all__ = [
    "ImageData",
    "FONTS",
    "SPLITS",
    "handwritten_digits",
    "RARE_CLASS",
    "rare_class_digits",
    "typeset_digits",
    "typeset_letters",
    "toy_2d",
    "TOY_NAMES",
    "random_shift",
    "FONT_FACES",
    "FONT_VARIANTS",
    "FontIndividuals",
    "font_individuals",
    "font_names",
    "font_glyphs",
    "ZIPF_TOP",
    "FontSplit",
    "font_split",
    "zipf_fonts",
    "embedding_fonts",
]

SPLITS = ("train", "test", "all")
TEST_FRACTION = 0.2
RESOLUTION = 8
_RENDER = 32  # glyphs are drawn at 32x32, then averaged over 4x4 blocks, as load_digits was

#: (TrueType file in matplotlib's ``mpl-data/fonts/ttf``, family, weight)
FONTS = (
    ("DejaVuSans.ttf", "sans", "regular"),
    ("DejaVuSans-Bold.ttf", "sans", "bold"),
    ("DejaVuSerif.ttf", "serif", "regular"),
    ("DejaVuSerif-Bold.ttf", "serif", "bold"),
    ("DejaVuSansMono.ttf", "mono", "regular"),
    ("DejaVuSansMono-Bold.ttf", "mono", "bold"),
    ("STIXGeneral.ttf", "stix", "thin"),
    ("STIXGeneralBol.ttf", "stix", "bold"),
    ("cmr10.ttf", "computer-modern", "thin"),
    ("cmss10.ttf", "computer-modern-sans", "thin"),
)


class ImageData(NamedTuple):
    """A labelled image set.

    Attributes:
        images: ``(N, 1, 8, 8)`` float32 in ``[-1, 1]``.
        labels: ``(N,)`` int64 class indices (digit value, or letter index A=0 ... J=9).
        styles: ``N`` strings describing each image's source, ``"handwritten"`` or
            ``"<family>-<weight>"`` for typeset glyphs.
    """

    images: torch.Tensor
    labels: torch.Tensor
    styles: tuple[str, ...]


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def _take(data: ImageData, split: str, seed: int) -> ImageData:
    """Deterministic, class-stratified train/test split (20% test)."""
    _check_split(split)
    if split == "all":
        return ImageData(data.images.clone(), data.labels.clone(), data.styles)
    rng = np.random.default_rng(seed)
    labels = data.labels.numpy()
    test = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n_test = int(round(TEST_FRACTION * len(idx)))
        test[rng.permutation(idx)[:n_test]] = True
    keep = np.flatnonzero(test if split == "test" else ~test)
    keep_t = torch.from_numpy(keep)
    return ImageData(data.images[keep_t].clone(), data.labels[keep_t].clone(),
                     tuple(data.styles[i] for i in keep))


@functools.lru_cache(maxsize=None)
def _handwritten_all() -> ImageData:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy(digits.images.astype(np.float32))  # (N, 8, 8), 0..16
    images = (x / 8.0 - 1.0).unsqueeze(1)  # (N, 1, 8, 8) in [-1, 1]
    labels = torch.from_numpy(digits.target.astype(np.int64))
    return ImageData(images, labels, ("handwritten",) * len(labels))


def handwritten_digits(split: str = "train", *, seed: int = 0) -> ImageData:
    """scikit-learn's handwritten digits (UCI optdigits test set), 8x8, in ``[-1, 1]``.

    Pixel ``v`` in 0..16 maps to ``v / 8 - 1``.

    Args:
        split: ``"train"`` (80%), ``"test"`` (20%) or ``"all"``; stratified by class.
        seed: seed of the train/test split.
    """
    return _take(_handwritten_all(), split, seed)


#: The class made rare in :func:`rare_class_digits` (the coverage experiment of the guidance chapter).
RARE_CLASS = 7


def rare_class_digits(split: str = "train", *, rare_class: int = RARE_CLASS, fraction: float = 0.02,
                      seed: int = 0) -> ImageData:
    """Handwritten digits in which ``rare_class`` makes up only ``fraction`` of the images.

    All images of the other classes are kept; of ``rare_class``, the first ``k`` of a seeded
    permutation, with ``k = round(fraction * n_other / (1 - fraction))`` (at least 1). The test
    split is the plain handwritten test split (guidance is judged against real digits of every class).
    """
    if not isinstance(rare_class, int) or not 0 <= rare_class <= 9:
        raise ValueError(f"rare_class must be an integer in [0, 9], got {rare_class!r}")
    if not 0.0 < fraction < 0.1:
        raise ValueError(f"fraction must be in (0, 0.1), got {fraction}")
    full = handwritten_digits(split)
    if split != "train":
        return full
    rare = torch.nonzero(full.labels == rare_class).squeeze(1)
    other = torch.nonzero(full.labels != rare_class).squeeze(1)
    k = max(1, round(fraction * len(other) / (1 - fraction)))
    keep_rare = rare[torch.randperm(len(rare), generator=torch.Generator().manual_seed(seed))[:k]]
    idx = torch.cat([other, keep_rare]).sort().values
    return ImageData(full.images[idx], full.labels[idx], tuple(full.styles[i] for i in idx.tolist()))


def _font_dir() -> str:
    import matplotlib

    return os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "fonts", "ttf")


@functools.lru_cache(maxsize=None)
def _font(font_file: str):
    from PIL import ImageFont

    return ImageFont.truetype(os.path.join(_font_dir(), font_file), 96)


def _render_glyph(char: str, font_file: str, rng: np.random.Generator) -> np.ndarray:
    """Draw ``char`` at 32x32 with a random affine jitter; return 8x8 ink in ``[0, 1]``."""
    from PIL import Image, ImageDraw

    font = _font(font_file)
    canvas = Image.new("L", (160, 160), 0)
    ImageDraw.Draw(canvas).text((30, 10), char, fill=255, font=font)
    glyph = canvas.crop(canvas.getbbox())
    # Fit the glyph's height to 28 of 32 pixels (load_digits digits span nearly the
    # full height), keeping its aspect ratio, centred.
    w, h = glyph.size
    scale = 28.0 / max(h, w * 28.0 / 24.0)
    glyph = glyph.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.LANCZOS)
    square = Image.new("L", (_RENDER, _RENDER), 0)
    square.paste(glyph, ((_RENDER - glyph.size[0]) // 2, (_RENDER - glyph.size[1]) // 2))
    # Random affine jitter about the centre: rotation, shear, scale, translation.
    angle = math.radians(rng.uniform(-10.0, 10.0))
    shear = rng.uniform(-0.15, 0.15)
    s = rng.uniform(0.9, 1.05)
    tx, ty = rng.uniform(-1.5, 1.5, size=2)
    return _jitter_and_reduce(square, angle, shear, s, tx, ty, RESOLUTION)


def _jitter_and_reduce(square, angle: float, shear: float, s: float, tx: float, ty: float,
                       resolution: int) -> np.ndarray:
    """Apply the affine jitter (rotation ``angle`` in radians, ``shear``, scale ``s``, shift ``tx, ty``)
    about the centre of a ``_RENDER``-square PIL image, box-filter it to ``resolution`` and quantise
    to 17 grey levels: ink in ``[0, 1]``."""
    from PIL import Image

    a = math.cos(angle) / s
    b = (math.sin(angle) + shear) / s
    d = -math.sin(angle) / s
    e = math.cos(angle) / s
    c0 = _RENDER / 2
    # PIL maps output (x, y) to input (a x + b y + c, d x + e y + f).
    coeffs = (a, b, c0 - a * c0 - b * c0 - tx, d, e, c0 - d * c0 - e * c0 - ty)
    square = square.transform(square.size, Image.AFFINE, coeffs, resample=Image.BILINEAR)
    ink = np.asarray(square, dtype=np.float32) / 255.0
    k = _RENDER // resolution
    ink = ink.reshape(resolution, k, resolution, k).mean(axis=(1, 3))  # box filter
    # load_digits stores integer grey levels 0..16; quantise the same way.
    return np.round(np.clip(ink * 1.6, 0.0, 1.0) * 16.0) / 16.0


@functools.lru_cache(maxsize=None)
def _typeset_all(chars: str, per_class: int, seed: int) -> ImageData:
    rng = np.random.default_rng(seed)
    images, labels, styles = [], [], []
    for label, char in enumerate(chars):
        for i in range(per_class):
            font_file, family, weight = FONTS[i % len(FONTS)]
            images.append(_render_glyph(char, font_file, rng))
            labels.append(label)
            styles.append(f"{family}-{weight}")
    x = torch.from_numpy(np.stack(images)).unsqueeze(1)  # (N, 1, 8, 8) in [0, 1]
    return ImageData(x * 2.0 - 1.0, torch.tensor(labels, dtype=torch.int64), tuple(styles))


def _check_per_class(per_class: int) -> None:
    if not isinstance(per_class, int) or per_class < 5:
        raise ValueError(f"per_class must be an integer >= 5, got {per_class!r}")


def typeset_digits(split: str = "train", *, seed: int = 0, per_class: int = 180) -> ImageData:
    """Digits 0-9 typeset in the fonts matplotlib ships (:data:`FONTS`), jittered, 8x8.

    Each glyph is drawn at 32x32 with a random rotation (+-10 deg), shear (+-0.15),
    scale (0.9-1.05) and shift (+-1.5 px), averaged over 4x4 blocks and quantised to 17
    grey levels like ``load_digits``. Fonts cycle through :data:`FONTS`.

    Args:
        split: ``"train"``, ``"test"`` or ``"all"``.
        seed: seed of the jitter and of the split.
        per_class: images per digit (default 180, about as many as the handwritten set).
    """
    _check_split(split)
    _check_per_class(per_class)
    return _take(_typeset_all("0123456789", per_class, seed), split, seed)


def typeset_letters(split: str = "train", *, seed: int = 0, per_class: int = 180) -> ImageData:
    """Capital letters A-J (labels 0-9) from the same renderer as :func:`typeset_digits`."""
    _check_split(split)
    _check_per_class(per_class)
    return _take(_typeset_all("ABCDEFGHIJ", per_class, seed), split, seed)


TOY_NAMES = ("moons", "ring")


def toy_2d(name: str, n: int, *, seed: int = 0) -> torch.Tensor:
    """2-D toy distributions, ``(n, 2)`` float32, roughly inside ``[-1, 1]^2``.

    Args:
        name: ``"moons"`` (scikit-learn's two moons, noise 0.05, rescaled) or ``"ring"``
            (8 Gaussians of std 0.05 evenly spaced on a circle of radius 0.8).
        n: number of points, >= 1.
        seed: random seed.
    """
    if name not in TOY_NAMES:
        raise ValueError(f"name must be one of {TOY_NAMES}, got {name!r}")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    rng = np.random.default_rng(seed)
    if name == "moons":
        from sklearn.datasets import make_moons

        pts, _ = make_moons(n, noise=0.05, random_state=seed)
        pts = (pts - np.array([0.5, 0.25])) / np.array([1.5, 1.0]) * 0.9
    else:
        k = rng.integers(0, 8, size=n)
        angle = 2 * np.pi * k / 8
        pts = 0.8 * np.stack([np.cos(angle), np.sin(angle)], axis=1)
        pts = pts + 0.05 * rng.standard_normal((n, 2))
    return torch.from_numpy(pts.astype(np.float32))


def random_shift(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Training augmentation: translate the batch ``x`` ``(B, C, H, W)`` by one random offset of
    -1..1 pixels in each direction (drawn from ``gen``); background -1 fills the border."""
    import torch.nn.functional as F

    padded = F.pad(x, (1, 1, 1, 1), value=-1.0)
    dx, dy = torch.randint(0, 3, (2,), generator=gen).tolist()
    return padded[..., dy:dy + x.shape[-2], dx:dx + x.shape[-1]]


# --- typefaces as individuals (the identity-coverage experiment) -----------------------------

#: Every face in matplotlib's ``mpl-data/fonts/ttf`` that draws the digits 0-9 (22 of its 42 files:
#: the others are symbol, display or fallback fonts; ``cmex10`` and ``cmsy10`` put symbols where
#: the digits would be).
FONT_FACES = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf", "DejaVuSansMono-BoldOblique.ttf",
    "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf",
    "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf",
    "cmr10.ttf", "cmb10.ttf", "cmti10.ttf", "cmss10.ttf", "cmtt10.ttf", "cmmi10.ttf",
)
#: Synthetic variants of each face: ``(width factor, stroke change in pixels at 96 pt)``; a face
#: and a variant together are one *individual* (whether an embedding can tell them apart is measured,
#: not assumed).
FONT_VARIANTS = ((1.0, 0), (0.75, 0), (1.3, 0), (1.0, 3), (1.0, -1))
#: Glyphs per digit of the most frequent generator individual (:meth:`FontSplit.per_digit`).
ZIPF_TOP = 40


class FontIndividuals(NamedTuple):
    """Digits drawn by typeface individuals.

    Attributes:
        images: ``(N, 1, R, R)`` float32 in ``[-1, 1]``.
        labels: ``(N,)`` int64 digit values.
        individuals: ``(N,)`` int64 individual index into ``names`` (and into :func:`font_names`).
        names: ``"<face>|w<width>|s<stroke>"`` for every individual (all of them, whichever were drawn).
    """

    images: torch.Tensor
    labels: torch.Tensor
    individuals: torch.Tensor
    names: tuple[str, ...]


def font_names() -> tuple[str, ...]:
    """The name of every individual, ``"<face>|w<width>|s<stroke>"``, in index order: individual
    ``i`` is face ``i // len(FONT_VARIANTS)`` in :data:`FONT_FACES` with variant ``i % len(FONT_VARIANTS)``."""
    return tuple(f"{face.removesuffix('.ttf')}|w{w:g}|s{s:+d}" for face in FONT_FACES for w, s in FONT_VARIANTS)


@functools.lru_cache(maxsize=None)
def _base_glyph(char: str, individual: int):
    """``char`` in one face and variant, stroke changed and width scaled at 96 pt, fitted into the
    32x32 canvas (a PIL image; the costly part of a render, so it is cached and only the jitter is redrawn)."""
    from PIL import Image, ImageDraw, ImageFilter

    face = FONT_FACES[individual // len(FONT_VARIANTS)]
    width, stroke = FONT_VARIANTS[individual % len(FONT_VARIANTS)]
    canvas = Image.new("L", (200, 160), 0)
    ImageDraw.Draw(canvas).text((50, 10), char, fill=255, font=_font(face))
    if stroke:
        size = 2 * abs(stroke) + 1
        canvas = canvas.filter(ImageFilter.MaxFilter(size) if stroke > 0 else ImageFilter.MinFilter(size))
    glyph = canvas.crop(canvas.getbbox()) if canvas.getbbox() else canvas
    w, h = glyph.size
    glyph = glyph.resize((max(1, round(w * width)), h), Image.LANCZOS)
    w, h = glyph.size
    scale = 28.0 / max(h, w * 28.0 / 30.0)
    glyph = glyph.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.LANCZOS)
    square = Image.new("L", (_RENDER, _RENDER), 0)
    square.paste(glyph, ((_RENDER - glyph.size[0]) // 2, (_RENDER - glyph.size[1]) // 2))
    return square


def _render_individual(char: str, individual: int, resolution: int, rng: np.random.Generator) -> np.ndarray:
    """One jittered draw of ``char`` by ``individual`` at ``resolution`` (8 or 16), ink in ``[0, 1]``."""
    square = _base_glyph(char, individual)
    angle = math.radians(rng.uniform(-4.0, 4.0))                 # smaller than the typeset set's jitter:
    s = rng.uniform(0.95, 1.03)                                   # the face must stay recognisable
    tx, ty = rng.uniform(-1.0, 1.0, size=2)
    return _jitter_and_reduce(square, angle, 0.0, s, tx, ty, resolution)


def font_glyphs(individuals, per_digit, *, resolution: int = 8, seed: int = 0) -> FontIndividuals:
    """Glyphs of the chosen individuals: each draws every digit ``per_digit`` times (an integer,
    or one integer per individual) with a small random jitter (rotation +-4 deg, scale 0.95-1.03,
    shift +-1 px at 32x32), box-filtered to ``resolution`` x ``resolution`` and quantised to 17 grey
    levels. Individual ``i``'s draws come from its own random stream ``(seed, i)``, so they do not
    depend on which other individuals are drawn.

    Args:
        individuals: indices into :func:`font_names` (``0 <= i < 110``), no repeats.
        per_digit: glyphs per digit, ``>= 1``; a sequence gives each individual its own count.
        resolution: 8 or 16.
        seed: the draw; different seeds give different jitters of the same glyphs.
    """
    if resolution not in (8, 16):
        raise ValueError(f"resolution must be 8 or 16, got {resolution!r}")
    ids = [int(i) for i in individuals]
    n = len(FONT_FACES) * len(FONT_VARIANTS)
    if not ids or len(set(ids)) != len(ids) or not all(0 <= i < n for i in ids):
        raise ValueError(f"individuals must be distinct indices in [0, {n}), got {list(individuals)!r}")
    counts = [per_digit] * len(ids) if isinstance(per_digit, int) else list(per_digit)
    if len(counts) != len(ids) or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in counts):
        raise ValueError(f"per_digit must be a positive integer or one per individual, got {per_digit!r}")
    images, labels, owners = [], [], []
    for i, count in zip(ids, counts):
        rng = np.random.default_rng([seed, i])
        for digit in range(10):
            for _ in range(count):
                images.append(_render_individual(str(digit), i, resolution, rng))
        labels += [d for d in range(10) for _ in range(count)]
        owners += [i] * (10 * count)
    x = torch.from_numpy(np.stack(images)).unsqueeze(1) * 2.0 - 1.0
    return FontIndividuals(x, torch.tensor(labels), torch.tensor(owners), font_names())


def font_individuals(*, resolution: int = 8, per_digit: int = 4, seed: int = 0) -> FontIndividuals:
    """Every individual (:data:`FONT_FACES` x :data:`FONT_VARIANTS`, 110) drawing each digit
    ``per_digit`` times (:func:`font_glyphs` of all of them)."""
    return font_glyphs(range(len(FONT_FACES) * len(FONT_VARIANTS)), per_digit, resolution=resolution, seed=seed)


class FontSplit(NamedTuple):
    """The identity experiment's three disjoint sets of individuals (indices into :func:`font_names`),
    split by *face*, so no variant of a face is on two sides.

    Attributes:
        embedding: individuals that train the identity embeddings (energy and judge).
        generator: individuals in the generators' training data, most frequent first
            (rank ``k``, from 1, draws each digit ``round(top / k)`` times, at least once: Zipf).
        held_out: individuals no model saw.
    """

    embedding: tuple[int, ...]
    generator: tuple[int, ...]
    held_out: tuple[int, ...]

    def per_digit(self, top: int = ZIPF_TOP) -> tuple[int, ...]:
        """Glyphs per digit of each generator individual, in rank order: ``max(1, round(top / k))``."""
        return tuple(max(1, round(top / k)) for k in range(1, len(self.generator) + 1))


def font_split(*, embedding_faces: int = 10, held_out_faces: int = 4, seed: int = 0) -> FontSplit:
    """Split the faces of :data:`FONT_FACES` at random (``seed``): ``embedding_faces`` faces for the
    embeddings, ``held_out_faces`` for no model, the rest for the generators; the generator
    individuals are then put in a random frequency order. Every variant of a face goes with it."""
    n = len(FONT_FACES)
    for name, v in (("embedding_faces", embedding_faces), ("held_out_faces", held_out_faces)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if embedding_faces + held_out_faces > n - 1:
        raise ValueError(f"embedding_faces + held_out_faces must leave at least one of the {n} faces for the "
                         f"generators, got {embedding_faces} + {held_out_faces}")
    g = torch.Generator().manual_seed(seed)
    faces = torch.randperm(n, generator=g).tolist()
    v = len(FONT_VARIANTS)
    members = lambda fs: [f * v + j for f in sorted(fs) for j in range(v)]
    embedding = members(faces[:embedding_faces])
    held_out = members(faces[embedding_faces:embedding_faces + held_out_faces])
    generator = members(faces[embedding_faces + held_out_faces:])
    generator = [generator[i] for i in torch.randperm(len(generator), generator=g).tolist()]
    return FontSplit(tuple(embedding), tuple(generator), tuple(held_out))


def zipf_fonts(split: str = "train", *, seed: int = 0) -> ImageData:
    """The generators' training data: the :func:`font_split` generator individuals at 8x8 with Zipf
    frequencies (:meth:`FontSplit.per_digit`); labels are digits, styles the individuals' names.
    ``"test"`` draws the same counts again with another jitter (``seed + 1``); ``"all"`` is ``"train"``."""
    _check_split(split)
    g = _zipf_glyphs(seed + (split == "test"), seed)
    return ImageData(g.images, g.labels, tuple(g.names[i] for i in g.individuals.tolist()))


@functools.lru_cache(maxsize=None)
def _zipf_glyphs(draw: int, split_seed: int) -> FontIndividuals:
    part = font_split(seed=split_seed)
    return font_glyphs(part.generator, part.per_digit(), seed=draw)


def embedding_fonts(split: str = "train", *, per_digit: int = 6, seed: int = 0) -> ImageData:
    """The identity embeddings' training data: the :func:`font_split` embedding individuals, every
    digit ``per_digit`` times at 8x8; **labels are individual indices** (the classes of the CosFace
    head), styles their names. ``"test"`` draws them again with another jitter (``seed + 1``)."""
    _check_split(split)
    g = _embedding_glyphs(per_digit, seed + (split == "test"), seed)
    return ImageData(g.images, g.individuals, tuple(g.names[i] for i in g.individuals.tolist()))


@functools.lru_cache(maxsize=None)
def _embedding_glyphs(per_digit: int, draw: int, split_seed: int) -> FontIndividuals:
    return font_glyphs(font_split(seed=split_seed).embedding, per_digit, seed=draw)
