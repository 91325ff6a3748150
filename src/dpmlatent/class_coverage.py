"""The rare-class coverage experiment of chapter 6 (Wu & De la Torre, Sec. 5): guided towards sevens,
does a diffusion model reach the class more often than a GAN, and more so when sevens are rare?

Four generators (:data:`MODELS`: a diffusion model and a GAN trained on all digits, and the two
trained with sevens cut to 2%) are guided towards :data:`~dpmlatent.data.RARE_CLASS` by two energies
(:func:`energies`: the digit classifier's ``-log p(7 | x)`` with weight 5 and the ``clip-digits``
energy of "a handwritten seven" with weight 60), ``N = 48`` chains for each of the seeds 0, 1, 2,
float64 on the portable grid (the same chains across kernel paths and Intel machines; on an AMD
machine a few diffusion chains part within ten steps, so they are stored): the GANs 1,000 Langevin steps of size
0.01 (:func:`gan_model`), the diffusion models 80 steps of size 0.05 on the 704-dimensional code of a
10-step DDIM sampler with ``eta = 1`` (:func:`diffusion_model`). Both energies run on the rare-sevens
models, the classifier energy on the all-digits ones (:func:`energy_names`).

The six runs cost 14 to 17 minutes on two CPU cores, about three quarters of it in the three diffusion
runs (each step backpropagates through ten float64 U-Net calls), the rest in the GANs' 1,000 steps
(float64 gradients of the classifier and CLIP energies for 144 chains). So they run once, in ``benchmarks/guidance_coverage.py
--save``, which stores every chain's final code and its traces (:func:`dpmlatent.coverage.save_chains`)
in :data:`RUN_PATH`. The chapter loads them, re-runs the first :data:`VERIFY_STEPS` steps of every run's
first seed to check that they are what this code computes (:func:`dpmlatent.coverage.verify_chains`), and
decodes and judges every image itself.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .coverage import Chains, CoverageModel, coverage_experiment
from .data import RARE_CLASS

__all__ = ["N", "DDIM_STEPS", "SEEDS", "TUNING_SEED", "WEIGHTS", "PROMPT", "MODELS", "RUN_PATH", "VERIFY_STEPS",
           "gan_model", "diffusion_model", "energies", "energy_names", "run"]

N, DDIM_STEPS, SEEDS, TUNING_SEED = 48, 10, (0, 1, 2), 99
"""Chains per seed, sampler steps of the diffusion code, the seeds of the experiment, and the seed the
chapter tunes the GAN's step size on (used by nothing else)."""

WEIGHTS = {"classifier": 5.0, "CLIP": 60.0}
PROMPT = "a handwritten seven"

#: chapter name -> zoo name, in the order of the chapter's table.
MODELS = {"diffusion, all digits": "ddpm-handwritten", "GAN, all digits": "gan-handwritten",
          "diffusion, 2% sevens": "ddpm-handwritten-rare", "GAN, 2% sevens": "gan-handwritten-rare"}

#: Where the book keeps the stored chains (the package is installed editable).
RUN_PATH = Path(__file__).resolve().parents[2] / "results" / "guidance_coverage"

#: Langevin steps of each stored run's first seed that the chapter re-runs to check the store, by kind.
VERIFY_STEPS = {"diffusion": 10, "GAN": 100}


def gan_model(name: str, *, step_size: float = 0.01, steps: int = 1000, device=None) -> CoverageModel:
    """The zoo GAN ``name`` in float64 with ``N`` standard-normal start codes per seed (all seeds in one
    batch: a small generator runs faster that way) and the given Langevin settings."""
    from . import zoo

    gan = zoo.load(name, device=device).requires_grad_(False).double()
    dev = next(gan.parameters()).device
    codes = lambda seed: torch.randn(N, gan.config.latent_dim, dtype=torch.float64,  # noqa: E731
                                     generator=torch.Generator().manual_seed(seed)).to(dev)
    return CoverageModel(gan, codes, step_size, steps, batch_seeds=True)


def diffusion_model(name: str, *, step_size: float = 0.05, steps: int = 80, device=None) -> CoverageModel:
    """The zoo diffusion model ``name`` as ``G(z)``: ``DDIM_STEPS`` DDIM steps with ``eta = 1`` in float64
    (channels-last: 1.25x faster on a CPU), its code ``(x_T, eps_T..eps_1)`` drawn per seed with
    :func:`~dpmlatent.latent.sample_latent`, and the given Langevin settings."""
    from diffusers import DDIMScheduler

    from . import zoo
    from .guidance import diffusion_generator
    from .latent import sample_latent

    pipe = zoo.load(name, device=device, memory_format=torch.channels_last)
    sched = DDIMScheduler.from_config(pipe.scheduler.config)
    g = diffusion_generator(pipe.unet.requires_grad_(False).double(), sched, eta=1.0, checkpoint=False)
    dev = pipe.unet.device
    codes = lambda seed: sample_latent((N, 1, 8, 8), sched, DDIM_STEPS, 1.0, device=dev,  # noqa: E731
                                       dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return CoverageModel(g, codes, step_size, steps)


def energies(device=None) -> dict:
    """``{"classifier": (5.0, E), "CLIP": (60.0, E)}``: the ``digit-classifier``'s ``-log p(7 | x)`` and
    the ``clip-digits`` energy of :data:`PROMPT`, both float64 and frozen."""
    from . import zoo
    from .energies import classifier_energy, clip_energy

    clf = zoo.load("digit-classifier", device=device).requires_grad_(False).double()
    clip_model, clip_tok = zoo.load("clip-digits", device=device)
    return {"classifier": (WEIGHTS["classifier"], classifier_energy(clf, RARE_CLASS)),
            "CLIP": (WEIGHTS["CLIP"], clip_energy(clip_model.requires_grad_(False).double(), clip_tok, PROMPT))}


def energy_names(model: str) -> tuple[str, ...]:
    """The energies the experiment uses on ``model``: both on the rare-sevens models (the claim is about
    rare classes), the classifier energy alone on the all-digits controls."""
    if model not in MODELS:
        raise ValueError(f"model must be one of {list(MODELS)}, got {model!r}")
    return ("classifier", "CLIP") if "2%" in model else ("classifier",)


def run(models: dict[str, CoverageModel], energy_fns: dict, *, progress: bool = False) -> dict[tuple[str, str], Chains]:
    """Guide each of ``models`` (chapter names of :data:`MODELS`) with its :func:`energy_names` from
    ``energy_fns`` (:func:`energies`), seeds :data:`SEEDS`, on the portable grid:
    ``{(model, energy): Chains}`` in the chapter's order."""
    from .guidance import PORTABLE_GRID

    runs = {}
    for name, model in models.items():
        chosen = {e: energy_fns[e] for e in energy_names(name)}
        runs.update(coverage_experiment({name: model}, chosen, seeds=SEEDS, grid=PORTABLE_GRID, progress=progress))
    return runs
