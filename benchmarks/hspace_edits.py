"""h-space edits (Asyrp) of held-out thin digits: learn a "bold" direction, print the edit table.

The experiment of chapter 7 with its knobs exposed: ``delta_h`` is learned on the DDIM-inverted
trajectories of training digits with the directional CLIP loss of the tiny ``clip-digits``
("a handwritten <digit>" -> "a bold handwritten <digit>", averaged over the ten digits), then the
64 thin held-out digits of chapter 5's stroke-weight task are decoded with it at several scales,
from DDIM-inverted codes (Asyrp's setting) and from DPM-Encoder codes, asymmetrically and
symmetrically. Columns as in ``benchmarks/edit_quality.py`` (strength = scale of delta_h):

  * success : digit kept and bold by the captions' rule (ink above the upper third of its class; a reconstruction scores 0)
  * digit   : the digit classifier still reads the input's digit
  * ink x   : mean ink of the edits / mean ink of the inputs
  * PSNR, SSIM to the input; CLIP, dCLIP with the target caption "a bold handwritten <digit>"

    .venv/bin/python benchmarks/hspace_edits.py [--t-edit 400] [--iterations 300] [--recon-weight 1.0]
                                                [--per-step] [--eta 0.5] [--seed 0] [--dtype float64]

float64 by default, as in chapter 7: learning amplifies float32 rounding, which differs between CPUs.

Chapter 7b's shifts (Asyrp as the official code trains them: ``dpmlatent.asyrp``) are trained and
stored by

    .venv/bin/python benchmarks/hspace_edits.py --train-shifts [--save] [--seeds 0 1 2] [--kinds constant delta]
                                                [--num-images 100] [--steps 40] [--epochs 5] [--batch-size 1]
                                                [--lr 0.5] [--lr-step 3] [--lr-gamma 0.1] [--edit-threshold 0.33]

which prints the editing strength, the t_edit it gives, and each training's loss and time, and with
``--save`` writes ``results/asyrp_shifts/`` (``asyrp.save_shifts``; the chapter loads it and re-runs the
first steps of every training).
"""

import argparse
import dataclasses
import math
import time

import torch
from diffusers import DDIMScheduler

from dpmlatent import asyrp, data, zoo
from dpmlatent.edit_experiment import edit_task, evaluate_edit, format_edit_table
from dpmlatent.encoder import ddim_invert, dpm_encode
from dpmlatent.hspace import asyrp_decode, directional_clip_loss, edit_steps, learn_delta_h, record_trajectory
from dpmlatent.text import caption


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=None,
                        help="DDIM steps of inversion and decoding (default 20; with --train-shifts 40)")
    parser.add_argument("--t-edit", type=int, default=400, help="edit the steps with t >= t_edit")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--lr", type=float, default=None,
                        help="learning rate (default 0.05, Adam; with --train-shifts 0.5, SGD as in Asyrp's code)")
    parser.add_argument("--recon-weight", type=float, default=1.0)
    parser.add_argument("--per-step", action="store_true", help="one delta_h per edited step")
    parser.add_argument("--train-images", type=int, default=128)
    parser.add_argument("--scales", type=float, nargs="+", default=[-1.0, 0.0, 0.5, 1.0, 2.0])
    parser.add_argument("--eta", type=float, default=0.5, help="eta of the DPM-Encoder codes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    parser.add_argument("--train-shifts", action="store_true", help="train chapter 7b's shifts (asyrp.train_shifts)")
    parser.add_argument("--save", action="store_true", help="with --train-shifts: store them in results/asyrp_shifts")
    defaults = asyrp.ShiftSettings()
    for field in dataclasses.fields(asyrp.ShiftSettings):
        value = getattr(defaults, field.name)
        flag = "--" + field.name.replace("_", "-")
        if flag in ("--steps", "--lr"):
            continue                                      # chapter 7's options, defaults set after parsing
        if isinstance(value, tuple):
            parser.add_argument(flag, nargs="+", type=int if field.name == "seeds" else str, default=None,
                                help=f"with --train-shifts (default {' '.join(map(str, value))})")
        else:
            parser.add_argument(flag, type=type(value), default=None, help=f"with --train-shifts (default {value})")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.train_shifts:
        return train_shifts(args)
    args.steps = 20 if args.steps is None else args.steps
    args.lr = 0.05 if args.lr is None else args.lr

    dtype = getattr(torch, args.dtype)
    pipe = zoo.load("ddpm-handwritten", dtype=dtype)
    unet = pipe.unet.requires_grad_(False)
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    digit_clf, domain_clf = zoo.load("digit-classifier"), zoo.load("domain-classifier")
    clip = zoo.load("clip-digits", dtype=dtype)
    clip[0].requires_grad_(False)

    x_train = data.handwritten_digits("train", seed=args.seed).images[:args.train_images].to(dtype)
    z_train = ddim_invert(unet, scheduler, x_train, num_inference_steps=args.steps)
    states = record_trajectory(unet, scheduler, z_train, eta=0.0)
    loss_fn = directional_clip_loss(*clip, [caption(d, "handwritten") for d in range(10)],
                                    [caption(d, "handwritten", "bold") for d in range(10)],
                                    recon_weight=args.recon_weight)
    learned = learn_delta_h(unet, scheduler, states, z_train.timesteps, loss_fn, t_edit=args.t_edit,
                            num_inference_steps=args.steps, per_step=args.per_step, iterations=args.iterations,
                            lr=args.lr, generator=torch.Generator().manual_seed(args.seed), progress=False)
    first, last = (sum(learned.losses[s]) / len(learned.losses[s]) for s in (slice(0, 20), slice(-20, None)))
    print(f"learned delta_h ({'per step' if args.per_step else 'global'}, 'bold'): "
          f"{edit_steps(z_train.timesteps, args.t_edit)} of {args.steps} steps edited, loss {first:.3f} -> {last:.3f}")

    task = edit_task("weight", num_images=64, seed=args.seed, dtype=dtype)
    codes = {"ddim-inversion": (ddim_invert(unet, scheduler, task.images, num_inference_steps=args.steps), 0.0),
             f"dpm-encoder eta={args.eta:g}": (dpm_encode(unet, scheduler, task.images, eta=args.eta,
                                                          num_inference_steps=args.steps,
                                                          generator=torch.Generator().manual_seed(args.seed)), args.eta)}
    rows = []
    with torch.no_grad():
        for name, (z, eta) in codes.items():
            for asymmetric in (True, False):
                for scale in (args.scales if asymmetric else [s for s in args.scales if s > 0]):
                    out = asyrp_decode(unet, scheduler, z, learned.delta_h, t_edit=args.t_edit, eta=eta, scale=scale,
                                       asymmetric=asymmetric)
                    rows.append(evaluate_edit(task, out, method=name if asymmetric else f"{name} sym",
                                              strength=scale, guidance_scale=math.nan, digit_classifier=digit_clf,
                                              domain_classifier=domain_clf, clip=clip))
    print("\n64 thin held-out digits; strength = scale of delta_h; 'sym' = the shift fed to the whole step")
    print(format_edit_table(rows))


def train_shifts(args) -> None:
    """Train (and with --save store) chapter 7b's shifts; print the editing strength and each training."""
    chosen = {}
    for field in dataclasses.fields(asyrp.ShiftSettings):
        value = getattr(args, field.name, None)                    # None: not given, the setting's default
        if value is not None:
            chosen[field.name] = tuple(value) if isinstance(value, list) else value
    settings = asyrp.ShiftSettings(**chosen)
    start = time.perf_counter()
    inputs = asyrp.shift_inputs(settings)
    s = inputs.strength
    print(f"editing strength of {settings.num_images} training digits ({settings.steps} DDIM steps; perceptual "
          f"distance on {settings.distance_network}):")
    print("     t  d(x, P_t)  d(x, x_t)")
    for t, c, n in zip(s.timesteps.tolist(), s.clean.tolist(), s.noisy.tolist()):
        print(f"  {t:4d}     {c:.3f}      {n:.3f}")
    print(f"text cosine {inputs.loss.text_cosine:.3f}, unrelated digits {s.unrelated:.3f} apart: t_edit = {inputs.t_edit} "
          f"(d(x, P_t) >= {settings.edit_threshold:g} x {inputs.loss.text_cosine:.3f} x {s.unrelated:.3f}); "
          f"{time.perf_counter() - start:.0f} s")
    run = asyrp.train_shifts(settings, inputs=inputs)
    print(f"{'kind':9} {'seed':>4} {'steps':>6} {'loss, first 100':>16} {'last 100':>9} {'seconds':>8}")
    for (kind, seed), losses in run.losses.items():
        print(f"{kind:9} {seed:4d} {len(losses):6d} {float(losses[:100].mean()):16.4f} "
              f"{float(losses[-100:].mean()):9.4f} {run.seconds[kind, seed]:8.0f}")
    if args.save:
        print("stored in", asyrp.save_shifts(run))


if __name__ == "__main__":
    main()
