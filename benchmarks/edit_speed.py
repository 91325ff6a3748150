"""Parity and speed of ``dpmlatent.edit.cycle_edit_pipeline`` against diffusers' CycleDiffusionPipeline.

Both run on the same tiny Stable Diffusion pipeline (``dpmlatent.tiny.tiny_stable_diffusion``,
random weights, built offline), the same 32x32 input, the same settings and generator seed. For
each setting the two are timed interleaved (A, B, A, B, ...) after a warm-up, and the table shows:

  * max |ours - theirs| on the "np" output (parity goal: <= 1e-4)
  * UNet evaluations per step of each (diffusers always evaluates 4 with guidance; we skip the
    source branch's unconditional half when source_guidance_scale == 1)
  * median seconds of each and the median speed ratio theirs / ours (goal: >= 1.0 everywhere,
    >= 1.1 with source_guidance_scale == 1)

    .venv/bin/python benchmarks/edit_speed.py [--runs 7] [--steps 50] [--threads 2]
"""

import argparse
import statistics
import time

import numpy as np
import torch

from dpmlatent.edit import cycle_edit_pipeline, unet_evaluations_per_step
from dpmlatent.tiny import tiny_stable_diffusion


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7, help="timed runs of each implementation per setting")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--strength", type=float, default=0.8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from diffusers import CycleDiffusionPipeline

    pipe = tiny_stable_diffusion()
    peer = CycleDiffusionPipeline(**{k: v for k, v in pipe.components.items() if k != "image_encoder"})
    peer.set_progress_bar_config(disable=True)
    image = np.random.default_rng(0).random((1, 32, 32, 3)).astype(np.float32)
    image_pt = torch.from_numpy(image).permute(0, 3, 1, 2)

    def theirs(g, sg):
        return peer(prompt="a dog", source_prompt="a cat", image=image_pt, strength=args.strength,
                    num_inference_steps=args.steps, guidance_scale=g, source_guidance_scale=sg, eta=0.1,
                    output_type="np", generator=torch.Generator().manual_seed(0)).images

    def ours(g, sg):
        return cycle_edit_pipeline(pipe, image, "a cat", "a dog", strength=args.strength,
                                   num_inference_steps=args.steps, guidance_scale=g, source_guidance_scale=sg,
                                   eta=0.1, output_type="np", generator=torch.Generator().manual_seed(0))

    settings = [(7.5, 1.0), (3.0, 1.0), (7.5, 2.0), (3.0, 3.0)]
    print(f"tiny Stable Diffusion pipeline, 32x32 image, {args.steps} steps at strength {args.strength}, "
          f"{args.runs} interleaved runs each, {args.threads} threads")
    print(f"{'guidance':>8} {'src guid.':>9} {'max |diff|':>11} {'evals/step':>11} "
          f"{'diffusers s':>11} {'ours s':>8} {'speed-up':>9}  goal")
    for g, sg in settings:
        diff = float(np.abs(ours(g, sg) - theirs(g, sg)).max())          # also the warm-up
        t_theirs, t_ours = [], []
        for _ in range(args.runs):
            for fn, bucket in ((theirs, t_theirs), (ours, t_ours)):
                start = time.perf_counter()
                fn(g, sg)
                bucket.append(time.perf_counter() - start)
        ratio = statistics.median(a / b for a, b in zip(t_theirs, t_ours))
        goal = 1.1 if sg == 1.0 else 1.0
        ok = "ok" if ratio >= goal and diff <= 1e-4 else "MISSED"
        evals = f"{4 if g > 1 else 2} vs {unet_evaluations_per_step(g, sg)}"
        print(f"{g:>8.1f} {sg:>9.1f} {diff:>11.1e} {evals:>11} {statistics.median(t_theirs):>11.3f} "
              f"{statistics.median(t_ours):>8.3f} {ratio:>8.2f}x  >= {goal:.1f}x {ok}")


if __name__ == "__main__":
    main()
