"""Quality table of the text-to-image model ``t2i-digits``, one row per caption family.

For each family ("handwritten", "typeset", and the thin/bold variants), 10 x per-digit samples
with 50 DDIM steps (eta = 0) and classifier-free guidance, scored by the zoo's classifiers
against the real held-out images of that family:

  * digit acc  : the digit classifier's label equals the prompted digit
  * domain acc : the domain classifier agrees with the prompted domain (handwritten / typeset)
  * ink ratio  : mean ink of the samples / mean ink of the real images of the family
                 (thin families should sit below the plain family, bold ones above)
  * FD         : Frechet distance in digit-classifier features to those real images

    .venv/bin/python benchmarks/t2i_quality.py [--per-digit 20] [--guidance 3.0]
"""

import argparse

import torch

from dpmlatent import zoo
from dpmlatent.text_to_image import format_quality_table, text_to_image_quality


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-digit", type=int, default=20)
    parser.add_argument("--guidance", type=float, nargs="+", default=[1.0, 3.0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = zoo.load("t2i-digits")
    digit, domain = zoo.load("digit-classifier"), zoo.load("domain-classifier")
    for g in args.guidance:
        rows = text_to_image_quality(pipe, digit, domain, per_digit=args.per_digit, guidance_scale=g,
                                     num_inference_steps=args.steps, progress=False)
        print(f"\nguidance scale {g:g}, {10 * args.per_digit} samples per family, {args.steps} DDIM steps")
        print(format_quality_table(rows))


if __name__ == "__main__":
    main()
