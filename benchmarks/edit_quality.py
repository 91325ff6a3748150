"""Zero-shot editing of held-out digits with ``t2i-digits``: CycleDiffusion vs the edit-friendly encoder
vs SDEdit vs DDIM inversion.

The edit table of chapter 5 (``dpmlatent.edit_experiment.edit_sweep``): for each edit kind
("digit": "a handwritten three" -> "a handwritten eight"; "domain": handwritten -> typeset;
"weight": thin -> bold), the same held-out inputs are edited by every method at every strength and
target guidance scale (source guidance 1, CycleDiffusion eta 0.1 as in the paper, the edit-friendly
encoder eta 1 as in its paper and diffusers' LEdits++), from the same seed, and scored:

  * success : digit edits: the digit classifier reads the target digit; domain edits: the domain
              classifier says typeset and the digit is kept; weight edits: digit kept and bold by the captions' rule (ink above the upper third of its class)
  * digit   : the digit classifier reads the target digit (the source digit for domain/weight)
  * domain  : the domain classifier reads the target domain
  * ink x   : mean ink of the edits / mean ink of the inputs
  * PSNR, SSIM to the input (faithfulness)
  * CLIP    : CLIP score of the edit and the target prompt, cos(f_img(edit), f_txt(target)), with the
              zoo's tiny clip-digits (the header line gives the inputs' score with their own caption
              and with the target caption, for reference)
  * dCLIP   : directional CLIP similarity, cos(f_img(edit) - f_img(input), f_txt(target) - f_txt(source))

    .venv/bin/python benchmarks/edit_quality.py [--images 64] [--strengths 0.3 0.5 0.8] [--guidance 1 3]
        [--methods cyclediffusion edit-friendly sdedit ddim-inversion]
"""

import argparse

import torch

from dpmlatent import metrics, zoo
from dpmlatent.edit import ALL_METHODS
from dpmlatent.edit_experiment import KINDS, edit_sweep, edit_task, format_edit_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--methods", nargs="+", choices=ALL_METHODS, default=list(ALL_METHODS))
    parser.add_argument("--strengths", type=float, nargs="+", default=[0.3, 0.5, 0.8])
    parser.add_argument("--guidance", type=float, nargs="+", default=[1.0, 3.0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--eta", type=float, default=0.1, help="CycleDiffusion's eta (SDEdit uses 1, DDIM inversion 0)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = zoo.load("t2i-digits")
    digit, domain = zoo.load("digit-classifier"), zoo.load("domain-classifier")
    clip = zoo.load("clip-digits")
    for kind in args.kinds:
        task = edit_task(kind, num_images=args.images, seed=args.seed)
        rows, _ = edit_sweep(pipe, task, digit_classifier=digit, domain_classifier=domain, methods=tuple(args.methods),
                             strengths=tuple(args.strengths), guidance_scales=tuple(args.guidance),
                             num_inference_steps=args.steps, eta=args.eta, seed=args.seed, clip=clip, progress=False)
        own, tgt = (metrics.clip_score(*clip, task.images, p).mean().item() for p in (task.source_prompts, task.prompts))
        print(f"\n{kind} edits: {args.images} held-out inputs, {args.steps} steps, seed {args.seed}; "
              f"CLIP score of the inputs with their own caption {own:.3f}, with the target caption {tgt:.3f}")
        print(format_edit_table(rows))


if __name__ == "__main__":
    main()
