"""Sample-quality metrics measured with the zoo classifier.

* confident fraction: share of images the classifier labels with ``max_y p(y|x) >= 0.9``;
* class histogram: share of each arg-max label (mode coverage);
* Frechet distance (Heusel et al. 2017) between Gaussians fitted to classifier features:
  ``FD = ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2})``;
* faithfulness of an image to a reference: :func:`psnr` and :func:`ssim`, per image, computed
  by torchmetrics (on the images' device and dtype);
* a perceptual distance in the form of LPIPS (Zhang et al. 2018) on a zoo CNN's convolutional
  features: :func:`perceptual_distance` (Asyrp's editing strength at 8x8, chapter 7b);
* agreement of an image with a text, measured with an open_clip model (the zoo's ``clip-digits``):
  :func:`clip_score` and the directional :func:`clip_direction` of an edit.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from .reporting import Column, Table, share_column
from .sampling import sample

__all__ = ["frechet_distance", "FrechetReference", "simulated_fd_difference", "classify", "psnr", "ssim",
           "perceptual_distance", "ink", "slant", "class_median_split", "clean_paths",
           "interpolation_pairs", "clip_score", "clip_direction", "nearest_mean_accuracy",
           "linear_probe", "QualityRow", "quality_row", "model_quality", "format_table"]


def frechet_distance(feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to two feature sets ``(N_a, D)``, ``(N_b, D)``:
    ``|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2})``, with scipy's ``sqrtm``.

    The textbook formula, kept as the reference the tests check :class:`FrechetReference` against;
    the book's tables and intervals all use :class:`FrechetReference` (one implementation)."""
    from scipy import linalg

    if feats_a.ndim != 2 or feats_b.ndim != 2 or feats_a.shape[1] != feats_b.shape[1]:
        raise ValueError("feats_a and feats_b must be (N, D) with the same D, got "
                         f"{tuple(feats_a.shape)} and {tuple(feats_b.shape)}")
    if min(len(feats_a), len(feats_b)) < 2:
        raise ValueError("each feature set needs at least 2 rows")
    a, b = feats_a.double().cpu().numpy(), feats_b.double().cpu().numpy()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(cov_a @ cov_b)
    covmean = covmean.real  # sqrtm returns tiny imaginary parts from round-off
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2.0 * covmean))


class FrechetReference:
    """The Frechet distance to one fixed reference set, fast enough to recompute on every bootstrap
    resample: the reference's mean and the square root of its covariance are computed once, and
    ``Tr((S_a S_b)^{1/2}) = sum_i sqrt(lambda_i)`` with ``lambda_i`` the eigenvalues of the symmetric
    ``S_b^{1/2} S_a S_b^{1/2}`` (the same number :func:`frechet_distance` computes with ``sqrtm``).

    ``FrechetReference(real_feats)(feats)`` with ``feats`` ``(N, D)``, ``N >= 2``, returns a float.
    """

    #: :meth:`leave_one_out` holds the ``(D, D)`` moments of this many bytes' worth of inputs at a time.
    CHUNK_BYTES = 64 * 2 ** 20

    def __init__(self, reference: torch.Tensor):
        if not isinstance(reference, torch.Tensor) or reference.ndim != 2 or len(reference) < 2:
            raise ValueError("reference must be an (N, D) tensor of features with N >= 2, got "
                             f"{getattr(reference, 'shape', type(reference).__name__)}")
        b = reference.detach().to("cpu", torch.float64)
        self.mean = b.mean(0)
        cov = torch.cov(b.T)
        evals, evecs = torch.linalg.eigh(cov)
        self.cov_sqrt = (evecs * evals.clamp_min(0).sqrt()) @ evecs.T
        self.trace = float(cov.trace())

    def __call__(self, feats: torch.Tensor) -> float:
        if feats.ndim != 2 or feats.shape[1] != len(self.mean) or len(feats) < 2:
            raise ValueError(f"feats must be (N, {len(self.mean)}) with N >= 2, got {tuple(feats.shape)}")
        a = feats.detach().to("cpu", torch.float64)
        return self.to_moments(a.mean(0), torch.cov(a.T))

    def to_moments(self, mean: torch.Tensor, cov: torch.Tensor) -> float:
        """The FD from a Gaussian with ``mean`` ``(D,)`` and covariance ``cov`` ``(D, D)`` (float64 on
        the CPU; e.g. a population's exact moments) to the reference."""
        if mean.shape != self.mean.shape or cov.shape != (len(self.mean), len(self.mean)):
            raise ValueError(f"mean and cov must be ({len(self.mean)},) and ({len(self.mean)}, {len(self.mean)}), "
                             f"got {tuple(mean.shape)} and {tuple(cov.shape)}")
        return float(self._fd(mean, cov))

    def _fd(self, mean: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
        """FD of a batch of moments ``(..., D)``, ``(..., D, D)`` to the reference, shape ``(...)``."""
        m = self.cov_sqrt @ cov @ self.cov_sqrt
        root = torch.linalg.eigvalsh((m + m.mT) / 2).clamp_min(0).sqrt().sum(-1)
        trace = cov.diagonal(dim1=-2, dim2=-1).sum(-1)
        return ((mean - self.mean) ** 2).sum(-1) + trace + self.trace - 2 * root

    def leave_one_out(self, feats: torch.Tensor) -> torch.Tensor:
        """The FD with each *input* left out in turn (the jackknife of :func:`dpmlatent.evidence.jackknife_ci`).

        ``feats`` is ``(inputs, rows, D)`` (every input's ``rows`` feature vectors, e.g. one per sampler
        seed, left out together) or ``(inputs, D)`` (one each); ``inputs >= 2`` and at least two rows
        must remain. Returns ``(inputs,)`` float64: entry ``i`` equals ``self(feats without input i)``,
        computed for all ``i`` at once by removing input ``i``'s sums from the totals (no loop over
        inputs; batched eigendecompositions over chunks of inputs, so memory stays near
        :attr:`CHUNK_BYTES` however many inputs there are).
        """
        if not isinstance(feats, torch.Tensor) or feats.ndim not in (2, 3) or feats.shape[-1] != len(self.mean):
            raise ValueError(f"feats must be (inputs, rows, {len(self.mean)}) or (inputs, {len(self.mean)}), got "
                             f"{getattr(feats, 'shape', type(feats).__name__)}")
        a = feats.detach().to("cpu", torch.float64)
        a = a.unsqueeze(1) if a.ndim == 2 else a
        n, s, _ = a.shape
        m = (n - 1) * s
        if n < 2 or m < 2:
            raise ValueError(f"leave_one_out needs at least 2 inputs and 2 rows left after removing one input, got "
                             f"{n} inputs x {s} rows")
        centre = a.mean((0, 1))
        a = a - centre                                            # sums of squares without cancellation
        part1 = a.sum(1)                                          # (n, D): each input's sum
        total1, total2 = part1.sum(0), torch.einsum("nsd,nse->de", a, a)
        out = torch.empty(n, dtype=torch.float64)
        chunk = max(1, self.CHUNK_BYTES // (8 * a.shape[-1] ** 2))  # inputs whose (D, D) moments fit in CHUNK_BYTES
        for i in range(0, n, chunk):
            part2 = torch.einsum("nsd,nse->nde", a[i:i + chunk], a[i:i + chunk])
            mean = (total1 - part1[i:i + chunk]) / m              # the mean without input i
            cov = (total2 - part2 - m * mean.unsqueeze(-1) * mean.unsqueeze(-2)) / (m - 1)
            out[i:i + chunk] = self._fd(mean + centre, cov)
        return out



def simulated_fd_difference(dim: int, *, equal: bool = False, reference_size: int = 1000, noise: float = 0.5,
                            generator: torch.Generator | None = None):
    """A world where the answer is known, for checking intervals on a difference of two FDs
    (``tests/test_evidence.py`` and ``benchmarks/fd_interval_coverage.py``).

    Two methods' Gaussian "features" on shared inputs: ``f = mu + L u + noise * e`` with ``u`` the
    input's own effect (shared by both methods and by all of an input's seeds) and ``e`` per-seed
    noise. Method a has ``mu_a = 0.4 e_0``, ``L_a = 1.1 I``; method b has ``mu_b = 0.2 e_1`` and
    ``L_b = L_a`` (``equal=True``: FD's finite-sample bias cancels in the difference) or
    ``diag(linspace(0.6, 1.3, dim))`` (it does not). The reference is ``reference_size`` standard
    normal rows drawn from ``generator`` first.

    Returns:
        ``(reference, truth, draw)``: the :class:`FrechetReference`, the exact population difference
        ``FD(a) - FD(b)`` to it, and ``draw(inputs, seeds) -> (fa, fb)``, each ``(inputs, seeds, dim)``
        float64, drawn from ``generator``.
    """
    if not isinstance(dim, int) or dim < 2:
        raise ValueError(f"dim must be an int >= 2, got {dim!r}")
    if not isinstance(reference_size, int) or reference_size < 2:
        raise ValueError(f"reference_size must be an int >= 2, got {reference_size!r}")
    g = torch.Generator().manual_seed(0) if generator is None else generator
    f64 = dict(dtype=torch.float64)
    reference = FrechetReference(torch.randn(reference_size, dim, generator=g, **f64))
    mu_a, mu_b = torch.zeros(dim, **f64), torch.zeros(dim, **f64)
    mu_a[0], mu_b[1] = 0.4, 0.2
    la = 1.1 * torch.eye(dim, **f64)
    lb = la if equal else torch.diag(torch.linspace(0.6, 1.3, dim, **f64))
    eye = noise ** 2 * torch.eye(dim, **f64)
    truth = reference.to_moments(mu_a, la @ la.T + eye) - reference.to_moments(mu_b, lb @ lb.T + eye)

    def draw(inputs: int = 64, seeds: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
        u = torch.randn(inputs, 1, dim, generator=g, **f64)
        fa = mu_a + u @ la.T + noise * torch.randn(inputs, seeds, dim, generator=g, **f64)
        fb = mu_b + u @ lb.T + noise * torch.randn(inputs, seeds, dim, generator=g, **f64)
        return fa, fb

    return reference, truth, draw

def ink(images: torch.Tensor) -> torch.Tensor:
    """Ink of each image ``(N, C, H, W)`` in ``[-1, 1]``: ``sum((x + 1) / 2)``, shape ``(N,)``
    (stroke weight: thin digits carry less ink than bold ones)."""
    return ((images + 1) / 2).flatten(1).sum(1)


def slant(images: torch.Tensor) -> torch.Tensor:
    """Slant of each image ``(N, 1, H, W)`` in ``[-1, 1]``, ink-weighted: how far the ink moves
    right per row upwards, ``-cov(col, row) / var(row)`` with weights ``w = (x + 1) / 2``
    (rows counted downwards, so a digit leaning right -- top to the right of its bottom -- is
    positive; 0 for an upright one). Shape ``(N,)``; an image without ink gets 0."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"images must have shape (N, 1, H, W), got {tuple(getattr(images, 'shape', ())) or type(images).__name__}")
    w = ((images[:, 0] + 1) / 2).clamp_min(0)                                   # (N, H, W)
    rows = torch.arange(w.shape[1], device=w.device, dtype=w.dtype)[:, None].expand_as(w[0])
    cols = torch.arange(w.shape[2], device=w.device, dtype=w.dtype)[None, :].expand_as(w[0])
    mass = w.sum((1, 2)).clamp_min(torch.finfo(w.dtype).tiny)
    mr, mc = (w * rows).sum((1, 2)) / mass, (w * cols).sum((1, 2)) / mass
    dr, dc = rows - mr[:, None, None], cols - mc[:, None, None]
    cov, var = (w * dr * dc).sum((1, 2)) / mass, (w * dr * dr).sum((1, 2)) / mass
    return torch.where(var > 0, -cov / var.clamp_min(torch.finfo(w.dtype).tiny), torch.zeros_like(var))


def class_median_split(values: torch.Tensor, labels: torch.Tensor, reference_values: torch.Tensor,
                       reference_labels: torch.Tensor) -> torch.Tensor:
    """``1`` where ``values`` lies above the median of its class in the reference set, else ``0``
    (``(N,)`` int64): a balanced binary label for a property such as stroke weight (:func:`ink`) or
    :func:`slant` that does not tell the class (each class is split at its own median). The medians
    come from ``reference_values`` / ``reference_labels`` (a training split), so a test split is
    labelled by a rule fixed before it is seen. Every class of ``labels`` must occur in the reference."""
    for name, v, y in (("", values, labels), ("reference_", reference_values, reference_labels)):
        if v.ndim != 1 or y.shape != v.shape or y.is_floating_point():
            raise ValueError(f"{name}values must be (N,) and {name}labels (N,) integers, got "
                             f"{tuple(v.shape)} and {tuple(y.shape)} {y.dtype}")
    missing = set(labels.unique().tolist()) - set(reference_labels.unique().tolist())
    if missing:
        raise ValueError(f"labels {sorted(missing)} do not occur in reference_labels")
    medians = {c: reference_values[reference_labels == c].median() for c in labels.unique().tolist()}
    cut = torch.stack([medians[c] for c in labels.tolist()]) if len(labels) else values
    return (values > cut.to(values)).long()


def interpolation_pairs(labels: torch.Tensor, num: int, *, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``num`` pairs of indices into ``labels`` ``(N,)`` whose labels differ: ``(first, second)``, each
    ``(num,)`` int64 on the CPU. Draws ``4 * num`` candidate firsts, then ``4 * num`` seconds, from
    ``generator`` and keeps the first ``num`` candidate pairs of different labels (pairs may repeat an
    index)."""
    if not isinstance(num, int) or isinstance(num, bool) or num < 1:
        raise ValueError(f"num must be a positive integer, got {num!r}")
    n = len(labels)
    first, second = torch.randint(n, (4 * num,), generator=generator), torch.randint(n, (4 * num,), generator=generator)
    keep = (labels.cpu()[first] != labels.cpu()[second]).nonzero().flatten()[:num]
    if len(keep) < num:
        raise ValueError(f"found only {len(keep)} of {num} pairs with different labels among {4 * num} candidates")
    return first[keep], second[keep]


def clean_paths(labels: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Which interpolation paths a judge reads as clean: ``labels`` ``(P, K)`` are the judge's labels
    of the ``K`` images along each of ``P`` paths, ``first`` / ``second`` ``(P,)`` the labels of the two
    end points' inputs. A path is clean (1.0) when it starts at ``first``, ends at ``second``, switches
    once and shows no third label; else 0.0. Returns float64 ``(P,)`` on the CPU (its mean is the
    share, :func:`dpmlatent.evidence.wilson_interval` its interval)."""
    if labels.ndim != 2 or labels.shape[1] < 2 or first.shape != (len(labels),) or second.shape != first.shape:
        raise ValueError(f"labels must be (P, K >= 2) and first, second (P,), got {tuple(labels.shape)}, "
                         f"{tuple(first.shape)}, {tuple(second.shape)}")
    labels, a, b = labels.cpu(), first.cpu()[:, None], second.cpu()[:, None]
    ends = (labels[:, 0] == a[:, 0]) & (labels[:, -1] == b[:, 0])
    only_two = ((labels == a) | (labels == b)).all(1)
    one_switch = (labels[:, 1:] != labels[:, :-1]).sum(1) == 1
    return (ends & only_two & one_switch).double()


def _check_pair(images: torch.Tensor, reference: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or not isinstance(reference, torch.Tensor):
        raise TypeError("images and reference must be torch tensors, got "
                        f"{type(images).__name__} and {type(reference).__name__}")
    if images.ndim != 4 or images.shape != reference.shape:
        raise ValueError("images and reference must both be (N, C, H, W) of the same shape, got "
                         f"{tuple(images.shape)} and {tuple(reference.shape)}")


def psnr(images: torch.Tensor, reference: torch.Tensor, *, data_range: float = 2.0) -> torch.Tensor:
    """Peak signal-to-noise ratio of each image to its reference, in dB.

    ``PSNR = 10 log10(data_range^2 / mean((x - ref)^2))``; ``data_range = 2`` for images in
    ``[-1, 1]``. Identical images give ``inf``.

    Args:
        images, reference: ``(N, C, H, W)`` of the same shape.

    Returns:
        ``(N,)`` PSNR values.
    """
    from torchmetrics.functional.image import peak_signal_noise_ratio

    _check_pair(images, reference)
    return peak_signal_noise_ratio(images, reference, data_range=data_range, reduction="none",
                                   dim=(1, 2, 3))


def ssim(images: torch.Tensor, reference: torch.Tensor, *, data_range: float = 2.0,
         kernel_size: int = 7) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) of each image to its reference, in ``[-1, 1]``.

    Gaussian window of ``kernel_size`` (odd, at most the image side; 7 suits 8x8 images),
    ``data_range = 2`` for images in ``[-1, 1]``.

    Args:
        images, reference: ``(N, C, H, W)`` of the same shape, ``H, W >= kernel_size``.

    Returns:
        ``(N,)`` SSIM values (1 for identical images).
    """
    from torchmetrics.functional.image import structural_similarity_index_measure

    _check_pair(images, reference)
    side = min(images.shape[-2:])
    if not isinstance(kernel_size, int) or kernel_size < 3 or kernel_size % 2 == 0 or kernel_size > side:
        raise ValueError(f"kernel_size must be an odd integer in [3, {side}] for {side}-pixel images, "
                         f"got {kernel_size!r}")
    return structural_similarity_index_measure(images, reference, data_range=data_range,
                                               kernel_size=kernel_size, reduction="none")


def perceptual_distance(network, images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """An LPIPS-like distance (Zhang et al. 2018, the "lin-free" baseline form) between each image and
    its reference, on the activations of a zoo CNN (:class:`dpmlatent.classifier.DigitClassifier`,
    ``arch="cnn"``) after each of its ``L = 3`` convolutions:

        d(x, y) = (1 / L) sum_l mean_{h, w} || f_l(x)_{hw} / |f_l(x)_{hw}| - f_l(y)_{hw} / |f_l(y)_{hw}| ||^2 / 4,

    each position's channel vector scaled to unit length (as LPIPS does), uniform weights over layers
    in place of LPIPS's learned ones, and divided by 4 so that ``d`` lies in ``[0, 1]`` (0: the same
    features; 1: opposite unit vectors everywhere). LPIPS's own weights are fitted to human judgements
    of photographs, which 8x8 digits have none of: the scale of ``d`` is not LPIPS's, and thresholds
    taken from work that used LPIPS must be read as such (chapter 7b).

    Args:
        network: a CNN ``DigitClassifier`` (e.g. ``zoo.load("domain-classifier")``); run in its own
            dtype on its own device, so a float32 network reads float64 images.
        images, reference: ``(N, 1, 8, 8)`` in ``[-1, 1]``, of the same shape.

    Returns:
        ``(N,)`` float64 on ``images``' device, 0 for identical images.
    """
    _check_pair(images, reference)
    layers = [m for m in getattr(network, "body", ()) if isinstance(m, torch.nn.Conv2d)]
    if not layers:
        raise TypeError(f"network must be a CNN DigitClassifier (arch='cnn') with convolutions in .body, "
                        f"got {type(network).__name__}")
    ref = next(network.parameters())
    both = torch.cat([images, reference]).to(ref.device, ref.dtype)
    if tuple(both.shape[1:]) != (1, 8, 8):
        raise ValueError(f"images must be (N, 1, 8, 8), got {tuple(images.shape)}")
    total = torch.zeros(len(images), dtype=torch.float64, device=ref.device)
    x, seen = both, 0
    with torch.no_grad():
        for module in network.body:
            x = module(x)
            if isinstance(module, torch.nn.GELU):               # the activation after a convolution
                unit = x.double() / (x.double().norm(dim=1, keepdim=True) + 1e-10)
                a, b = unit[:len(images)], unit[len(images):]
                total += ((a - b) ** 2).sum(1).flatten(1).mean(1) / 4
                seen += 1
                if seen == len(layers):
                    break
    return (total / seen).to(images.device)


def _prompt_list(prompts, n: int, name: str) -> list[str]:
    prompts = [prompts] * n if isinstance(prompts, str) else prompts
    if not isinstance(prompts, (list, tuple)) or len(prompts) != n:
        raise ValueError(f"{name} must be one string or a list of {n} strings (one per image), "
                         f"got {len(prompts) if isinstance(prompts, (list, tuple)) else type(prompts).__name__}")
    return list(prompts)


@torch.no_grad()
def clip_score(model, tokenizer, images: torch.Tensor, prompts: str | list[str]) -> torch.Tensor:
    """CLIP score (Radford et al. 2021; Hessel et al. 2021 without the rescaling) of each image
    and its prompt: ``cos(f_img(x_i), f_txt(c_i))``, in ``[-1, 1]``.

    Args:
        model, tokenizer: an open_clip model and its tokenizer (``zoo.load("clip-digits")``).
        images: ``(N, C, H, W)`` in ``[-1, 1]``.
        prompts: one prompt for all images or ``N`` prompts.

    Returns:
        ``(N,)`` cosines.
    """
    from .clip import clip_embed_images, clip_embed_text

    prompts = _prompt_list(prompts, len(images), "prompts")
    img = clip_embed_images(model, images.to(next(model.parameters()).device))
    return (img * clip_embed_text(model, tokenizer, prompts).to(img.dtype)).sum(-1)


@torch.no_grad()
def clip_direction(model, tokenizer, edited: torch.Tensor, images: torch.Tensor, prompts: str | list[str],
                   source_prompts: str | list[str], *, unchanged_atol: float = 1e-4) -> torch.Tensor:
    """Directional CLIP similarity of each edit (Gal et al. 2022), in ``[-1, 1]``: does the image
    move in CLIP space the way its caption moves,
    ``cos(f_img(x_edit) - f_img(x), f_txt(c_tgt) - f_txt(c_src))``.

    Unlike :func:`clip_score` it ignores what the input and the edit share. An unchanged image
    scores 0: an "edit" within ``unchanged_atol`` of its input in every pixel (an exact
    reconstruction, off by floating-point rounding) has no direction, and the cosine of a rounding
    error would be noise that differs from CPU to CPU.

    Args:
        model, tokenizer: an open_clip model and its tokenizer.
        edited, images: the edits and their inputs, ``(N, C, H, W)`` in ``[-1, 1]``.
        prompts, source_prompts: the target and the source caption, one for all or ``N`` each.
        unchanged_atol: largest ``max |x_edit - x|`` (>= 0) that counts as no change; the default
            1e-4 is 1/80 of an 8-bit grey level on ``[-1, 1]``.

    Returns:
        ``(N,)`` cosines.
    """
    if not (isinstance(unchanged_atol, (int, float)) and math.isfinite(unchanged_atol) and unchanged_atol >= 0):
        raise ValueError(f"unchanged_atol must be a finite number >= 0, got {unchanged_atol!r}")
    from .clip import clip_embed_images, clip_embed_text

    _check_pair(edited, images)
    prompts = _prompt_list(prompts, len(images), "prompts")
    source_prompts = _prompt_list(source_prompts, len(images), "source_prompts")
    device = next(model.parameters()).device
    d_img = clip_embed_images(model, edited.to(device)) - clip_embed_images(model, images.to(device))
    d_txt = clip_embed_text(model, tokenizer, prompts) - clip_embed_text(model, tokenizer, source_prompts)
    cos = torch.nn.functional.cosine_similarity(d_img, d_txt.to(d_img.dtype), dim=-1, eps=1e-12)
    changed = (edited.to(device) - images.to(device)).flatten(1).abs().amax(1) > unchanged_atol
    return torch.where(changed, cos, torch.zeros_like(cos))


def nearest_mean_accuracy(features: torch.Tensor, labels: torch.Tensor, *, train_fraction: float = 0.5) -> float:
    """How well ``features`` ``(N, D)`` separate the classes of ``labels`` ``(N,)``, read by the simplest
    linear probe: class means fitted on the first ``train_fraction`` of the rows, every other row
    labelled by its nearest mean (Euclidean). Chance is about ``1 / K`` for ``K`` balanced classes."""
    if features.ndim != 2 or labels.shape != (len(features),):
        raise ValueError(f"features must be (N, D) and labels (N,), got {tuple(features.shape)} and {tuple(labels.shape)}")
    n_train = int(len(features) * train_fraction)
    if not 0 < n_train < len(features):
        raise ValueError(f"train_fraction={train_fraction} leaves no rows to fit or to test among {len(features)}")
    feats, labels = features.double().cpu(), labels.long().cpu()
    classes = labels[:n_train].unique()
    means = torch.stack([feats[:n_train][labels[:n_train] == c].mean(0) for c in classes])
    pred = classes[torch.cdist(feats[n_train:], means).argmin(1)]
    return (pred == labels[n_train:]).double().mean().item()


def linear_probe(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                 test_labels: torch.Tensor, *, l2: float = 1e-3, max_iter: int = 500) -> torch.Tensor:
    """How linearly decodable ``labels`` are from features: multinomial logistic regression fitted on
    the training rows, scored on the test rows. Returns the test rows' correctness ``(N_test,)`` (bool;
    its mean is the accuracy, :func:`dpmlatent.evidence.wilson_interval` its interval).

    Features ``(N, D)`` (any shape ``(N, ...)`` is flattened) are standardised with the training rows'
    mean and standard deviation; the weights minimise the mean cross-entropy plus ``l2 * ||W||^2``
    by L-BFGS in float64 from zero (a convex problem: the answer does not depend on a seed).
    Labels are integers in ``[0, K)``; chance is the majority class's share.
    """
    if not isinstance(l2, (int, float)) or l2 < 0:
        raise ValueError(f"l2 must be a number >= 0, got {l2!r}")
    xs, ys = [], []
    for name, f, y in (("train", train_features, train_labels), ("test", test_features, test_labels)):
        if f.ndim < 2 or y.shape != (len(f),) or y.is_floating_point():
            raise ValueError(f"{name}_features must be (N, ...) and {name}_labels (N,) integers, got "
                             f"{tuple(f.shape)} and {tuple(y.shape)} {y.dtype}")
        xs.append(f.detach().flatten(1).double().cpu())
        ys.append(y.long().cpu())
    (x_tr, x_te), (y_tr, y_te) = xs, ys
    if x_tr.shape[1] != x_te.shape[1]:
        raise ValueError(f"train and test features differ in size: {x_tr.shape[1]} and {x_te.shape[1]}")
    mean, std = x_tr.mean(0), x_tr.std(0).clamp_min(1e-12)
    x_tr, x_te = (x_tr - mean) / std, (x_te - mean) / std
    k = int(max(y_tr.max(), y_te.max())) + 1
    w = torch.zeros(x_tr.shape[1] + 1, k, dtype=torch.float64, requires_grad=True)
    ones = torch.ones(len(x_tr), 1, dtype=torch.float64)
    opt = torch.optim.LBFGS([w], max_iter=max_iter, tolerance_grad=1e-10, tolerance_change=1e-14,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(torch.cat([x_tr, ones], 1) @ w, y_tr) + l2 * w[:-1].square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        pred = (torch.cat([x_te, torch.ones(len(x_te), 1, dtype=torch.float64)], 1) @ w).argmax(1)
    return pred == y_te


@torch.no_grad()
def classify(classifier, images: torch.Tensor, *, batch_size: int = 512):
    """Return ``(probs (N, K), features (N, D))`` of ``images`` under ``classifier``, on the
    classifier's device and in its dtype (float64 images are read by a float32 classifier)."""
    param = next(classifier.parameters())
    probs, feats = [], []
    for chunk in images.split(batch_size):
        f = classifier.features(chunk.to(device=param.device, dtype=param.dtype))
        probs.append(classifier.head(f).softmax(-1).cpu())
        feats.append(f.cpu())
    return torch.cat(probs), torch.cat(feats)


@dataclasses.dataclass
class QualityRow:
    """One line of the zoo quality table."""

    model: str
    confident: float                 # fraction with max p >= threshold
    class_fractions: list[float]     # arg-max label histogram, sums to 1
    frechet: float                   # FD to the held-out real images (the plug-in estimate)
    num_samples: int | None = None   # how many samples the shares are over (sets the printed precision)
    #: ``(FD, leave-one-out FDs)`` for :func:`dpmlatent.evidence.jackknife_ci` (None: not measured)
    frechet_jackknife: tuple[float, torch.Tensor] | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def frechet_ci(self):
        """The bias-corrected FD with its 95% jackknife interval over the samples
        (:func:`dpmlatent.evidence.jackknife_ci`; the reference set is held fixed)."""
        from .evidence import jackknife_ci
        if self.frechet_jackknife is None:
            raise ValueError(f"{self.model}: no leave-one-out FDs were stored (use quality_row)")
        return jackknife_ci(*self.frechet_jackknife)

    @property
    def min_class(self) -> float:
        return min(self.class_fractions)

    @property
    def max_class(self) -> float:
        return max(self.class_fractions)


def quality_row(name: str, images: torch.Tensor, classifier, real: torch.Tensor, *,
                threshold: float = 0.9) -> QualityRow:
    """Measure ``images`` ``(N, 1, 8, 8)`` against held-out ``real`` images."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    probs, feats = classify(classifier, images)
    _, real_feats = classify(classifier, real)
    k = probs.shape[1]
    hist = torch.bincount(probs.argmax(1), minlength=k).double() / len(probs)
    ref = FrechetReference(real_feats)
    fd = ref(feats)                       # = frechet_distance(feats, real_feats) to ~1e-9 relative
    return QualityRow(name, (probs.max(1).values >= threshold).double().mean().item(),
                      hist.tolist(), fd, num_samples=len(images), frechet_jackknife=(fd, ref.leave_one_out(feats)))


def model_quality(name: str, pipe, classifier, real: torch.Tensor, *, num_samples: int = 512,
                  num_inference_steps: int = 50, eta: float = 0.0, seed: int = 0, progress: bool = True) -> QualityRow:
    """Sample ``num_samples`` images with 50-step DDIM (``eta``, default 0) and measure them."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    gen = torch.Generator().manual_seed(seed)
    images = sample(pipe.unet, scheduler, num_samples, num_inference_steps=num_inference_steps, eta=eta,
                    generator=gen, progress=progress)
    return quality_row(name, images, classifier, real)


def format_table(rows: list[QualityRow]) -> Table:
    """A :class:`~dpmlatent.reporting.Table` of :class:`QualityRow` s: confident fraction, min/max class
    share (each at the precision its number of samples supports,
    :func:`dpmlatent.reporting.fmt_fraction`), FD (plug-in) and, where the row holds its jackknife, the
    bias-corrected FD with its 95% interval."""
    cols = [Column("model", "<", 28), Column("p>=0.9", ">", 7), Column("min cls", ">", 8), Column("max cls", ">", 8),
            Column("FD", ">", 8), Column("FD bias-corrected [95% CI]", ">")]
    return Table(cols, [[r.model, share_column(r.confident, r.num_samples, 0, name="p>=0.9"),
                         share_column(r.min_class, r.num_samples, 0, name="min cls"),
                         share_column(r.max_class, r.num_samples, 0, name="max cls"), f"{r.frechet:.1f}",
                         "-" if r.frechet_jackknife is None else str(r.frechet_ci)] for r in rows])
