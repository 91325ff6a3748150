"""The chains of chapter 6's rare-class coverage experiment, run once and stored.

Runs the six runs of :mod:`dpmlatent.class_coverage` (the all-digits diffusion model and GAN with the
classifier energy, the rare-sevens ones with the classifier and CLIP energies; 48 chains for each of
the seeds 0, 1, 2; float64 Langevin on the portable grid: 80 steps of size 0.05 for the diffusion
models, 1,000 of size 0.01 for the GANs), prints the chapter's coverage table, and with ``--save``
stores the chains where the chapter reads them (``results/guidance_coverage``: final codes in float64
and every step's traces in float32, about 6 MB) and prints the table again from the stored copy,
decoded exactly as the chapter decodes it.

    .venv/bin/python benchmarks/guidance_coverage.py [--save [FOLDER]] [--threads 2]

14 to 17 minutes on two CPU cores (the stored run: 1,029 s on 2 threads, 2026-12-06), about three
quarters of it in the diffusion runs (0.85-1.1 s per Langevin step of 48 chains). The chains are the same
on every CPU (float64 on the portable grid), so a stored copy made here is what any reader's machine
computes; the chapter checks that on the first steps of every run.
"""

import argparse
import time

import torch

from dpmlatent import class_coverage as cc
from dpmlatent import zoo
from dpmlatent.coverage import decode_chains, format_coverage_table, load_chains, save_chains
from dpmlatent.data import RARE_CLASS

REBUILD = "python benchmarks/guidance_coverage.py --save"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--save", nargs="?", const=str(cc.RUN_PATH), default=None,
                        help=f"store the chains in this folder (default {cc.RUN_PATH})")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models = {name: (cc.diffusion_model if name.startswith("diffusion") else cc.gan_model)(zoo_name)
              for name, zoo_name in cc.MODELS.items()}
    start = time.perf_counter()
    runs = cc.run(models, cc.energies(), progress=True)
    seconds = time.perf_counter() - start
    judges = {"digit-judge": zoo.load("digit-judge").requires_grad_(False).double(),
              "digit-classifier": zoo.load("digit-classifier").requires_grad_(False).double()}
    print(format_coverage_table(list(runs.values()), judges, RARE_CLASS))
    print(f"{len(runs)} runs x {len(cc.SEEDS)} seeds in {seconds:.0f} s on {torch.get_num_threads()} threads")
    if args.save:
        stored = decode_chains(load_chains(save_chains(runs, args.save, rebuild=REBUILD)), models, seeds=cc.SEEDS)
        same = all(torch.equal(stored[k].images, r.images) and torch.equal(stored[k].energy, r.energy.float().double())
                   for k, r in runs.items())
        print(f"stored in {args.save}; decoded from the stored codes the images are identical, and the traces "
              f"equal the float32 rounding of the run's: {same}")
        print(format_coverage_table(list(stored.values()), judges, RARE_CLASS))


if __name__ == "__main__":
    main()
