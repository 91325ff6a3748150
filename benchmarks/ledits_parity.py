"""The edit-friendly encoder against diffusers' LEdits++ inversion: same numbers, and the time of both.

On the tiny Stable Diffusion pipeline (random weights, 32x32 images, 16x16x4 latents; built offline
by ``dpmlatent.tiny``), for several step counts: invert B random images with
``LEditsPPPipelineStableDiffusion.invert`` (``dpmlatent.ledits``) and with
``dpmlatent.encoder.edit_friendly_encode`` on the same latents with the same generator, and print
the largest difference of their x_T and of their noises (relative to the largest noise), both codes' round-trip error in latent space, and
the wall time of each encoder (LEdits++'s includes its VAE encode and decode of the input, which
ours does not need: the column "VAE s" times those two calls alone).

    .venv/bin/python benchmarks/ledits_parity.py [--batch 4] [--steps 10 25 50]
"""

import argparse

import torch
from diffusers.utils import logging as diffusers_logging

from dpmlatent.encoder import edit_friendly_encode
from dpmlatent.latent import decode
from dpmlatent.ledits import ledits_code, ledits_pipeline
from dpmlatent.tiny import tiny_stable_diffusion
from roundtrip import _timed          # benchmarks/ is on sys.path when a benchmark runs as a script


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 25, 50])
    args = parser.parse_args()
    torch.set_num_threads(2)
    diffusers_logging.set_verbosity_error()
    pipe = tiny_stable_diffusion()
    peer = ledits_pipeline(pipe)
    images = torch.rand(args.batch, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    print(f"tiny Stable Diffusion pipeline, batch {args.batch}, torch threads {torch.get_num_threads()}")
    print(f"{'steps':>5} {'|x_T diff|':>10} {'|noise diff| / max|noise|':>26} {'ours err':>9} {'theirs err':>10} "
          f"{'ours s':>7} {'LEdits++ s':>10} {'VAE s':>6}")
    for steps in args.steps:
        (theirs, x0, empty, scheduler), t_theirs = _timed(lambda: ledits_code(
            peer, images, num_inference_steps=steps, generator=torch.Generator().manual_seed(0)))
        ours, t_ours = _timed(lambda: edit_friendly_encode(peer.unet, scheduler, x0, eta=1.0, num_inference_steps=steps,
                                                           cond=empty, generator=torch.Generator().manual_seed(0)))
        with torch.no_grad():
            _, t_vae = _timed(lambda: peer.vae.decode(peer.vae.encode(images * 2 - 1).latent_dist.mode()))
            err = {k: (decode(peer.unet, scheduler, z, eta=1.0, cond=empty) - x0).abs().max().item()
                   for k, z in (("ours", ours), ("theirs", theirs))}
        dx = (ours.x_start - theirs.x_start).abs().max().item()
        dn = ((ours.noises - theirs.noises).abs().max() / theirs.noises.abs().max()).item()
        print(f"{steps:>5} {dx:>10.1e} {dn:>26.1e} {err['ours']:>9.1e} {err['theirs']:>10.1e} "
              f"{t_ours:>7.2f} {t_theirs:>10.2f} {t_vae:>6.2f}")


if __name__ == "__main__":
    main()
