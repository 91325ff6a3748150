"""Unpaired translation between handwritten and typeset digits: the table of chapter 4.

For each direction, the same held-out source images (256 by default, drawn with a seeded
permutation of the test split) are translated by CycleDiffusion (eta = 0.1), SDEdit (eta = 1)
and DDIB (deterministic) at every strength, with the same seed, and scored by
``dpmlatent.translation.evaluate_translation``:

  * class kept  : the digit classifier's label of the translation equals the source's label
  * p(target)   : the domain classifier's mean probability of the target domain (realism)
  * FD          : Frechet distance in digit-classifier features to real held-out target images
  * PSNR, SSIM  : faithfulness to the source image

Two reference rows frame the table: the untranslated source, and real target-domain images.
Chapter 4 adds CycleDiffusion with eta = 1 as a variant (``--variant-eta``; 0 leaves it out).

    .venv/bin/python benchmarks/translation.py [--num-images 256] [--steps 50] [--direction ...]
"""

import argparse
import dataclasses
import json
import time

import torch

from dpmlatent import zoo
from dpmlatent.translation import (DIRECTIONS, METHODS, STRENGTHS, format_translation_table, run_translation,
                                   translation_task)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-images", type=int, default=256)
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps of the full schedule")
    parser.add_argument("--strengths", type=float, nargs="+", default=list(STRENGTHS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--direction", choices=(*DIRECTIONS, "both"), default="both")
    parser.add_argument("--variant-eta", type=float, default=1.0,
                        help="also run CycleDiffusion with this eta (0: don't)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--json", default=None, help="also write the rows as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    digit, domain = zoo.load("digit-classifier"), zoo.load("domain-classifier")
    directions = list(DIRECTIONS) if args.direction == "both" else [args.direction]
    out = {}
    for direction in directions:
        task = translation_task(direction, num_images=args.num_images, seed=args.seed)
        start = time.perf_counter()
        refs, result = run_translation(task, digit, domain, methods=tuple(args.methods),
                                       strengths=tuple(args.strengths), num_inference_steps=args.steps,
                                       seed=args.seed)
        rows = refs + result.rows
        if args.variant_eta:
            variant = run_translation(task, digit, domain, methods=("cyclediffusion",), eta=args.variant_eta,
                                      label=f"cyclediffusion eta={args.variant_eta:g}",
                                      strengths=tuple(args.strengths), num_inference_steps=args.steps,
                                      seed=args.seed)[1]
            rows += variant.rows
        seconds = time.perf_counter() - start
        print(f"\n{direction}: {args.num_images} held-out inputs, {args.steps}-step schedule, seed {args.seed} "
              f"({seconds:.0f} s)")
        print(format_translation_table(rows))
        out[direction] = [dataclasses.asdict(r) for r in rows]
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
