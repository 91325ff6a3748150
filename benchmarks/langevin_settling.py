"""Which Langevin step size settles a guided diffusion model's chains within the step budget?

Chapter 6 chooses each model's step size with `dpmlatent.coverage.settling_sweep` on a seed that the
coverage experiment does not use: the smallest step at which the energy and ||z||^2/d stop drifting
(`dpmlatent.guidance.plateau`) within the budget. The GAN's sweep runs in the chapter (its steps cost
milliseconds); this script runs the diffusion model's (a step backpropagates through the whole
DDIM chain in float64: about 0.9 s for 48 codes on two CPU cores, so the sweep takes minutes) and
prints the table: per step size, the energy and ||z||^2/d over the last quarter of the steps, their
drift with a 95% interval, whether both settled, and the independent judge's success share.

    .venv/bin/python benchmarks/langevin_settling.py [--model ddpm-handwritten-rare] [--energy classifier]
        [--step-sizes 0.025 0.05 0.1] [--steps 80] [--seed 99]
"""

import argparse
import time

import torch
from diffusers import DDIMScheduler

from dpmlatent import zoo
from dpmlatent.coverage import CoverageModel, settling_sweep
from dpmlatent.data import RARE_CLASS
from dpmlatent.energies import classifier_energy, clip_energy
from dpmlatent.guidance import PORTABLE_GRID, diffusion_generator
from dpmlatent.latent import sample_latent
from dpmlatent.notebook import setup


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ddpm-handwritten-rare")
    parser.add_argument("--energy", choices=["classifier", "CLIP"], nargs="+", default=["classifier", "CLIP"])
    parser.add_argument("--step-sizes", type=float, nargs="+", default=[0.025, 0.05, 0.1])
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--seed", type=int, default=99, help="a seed the chapter's experiment does not use")
    parser.add_argument("--num", type=int, default=48, help="chains")
    parser.add_argument("--ddim-steps", type=int, default=10)
    args = parser.parse_args()

    device = setup(seed=0)
    pipe = zoo.load(args.model, device=device, memory_format=torch.channels_last)   # as chapter 6
    sched = DDIMScheduler.from_config(pipe.scheduler.config)
    g = diffusion_generator(pipe.unet.requires_grad_(False).double(), sched, eta=1.0, checkpoint=False)
    codes = lambda seed: sample_latent((args.num, 1, 8, 8), sched, args.ddim_steps, 1.0, device=device,  # noqa: E731
                                       dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    clf = zoo.load("digit-classifier", device=device).requires_grad_(False).double()
    judge = zoo.load("digit-judge", device=device).requires_grad_(False).double()
    clip_model, clip_tok = zoo.load("clip-digits", device=device)
    energies = {"classifier": (5.0, classifier_energy(clf, RARE_CLASS)),
                "CLIP": (60.0, clip_energy(clip_model.requires_grad_(False).double(), clip_tok, "a handwritten seven"))}
    for name in args.energy:
        start = time.perf_counter()
        table, _ = settling_sweep(CoverageModel(g, codes, 1.0, 1), *energies[name], step_sizes=args.step_sizes,
                                  steps=args.steps, seed=args.seed, judge=judge, target=RARE_CLASS,
                                  grid=PORTABLE_GRID, progress=True)
        print(f"\n{args.model}, {name} energy, {args.num} chains, seed {args.seed} "
              f"({time.perf_counter() - start:.0f} s; judge: digit-judge, p >= 0.9)")
        print(table)


if __name__ == "__main__":
    main()
