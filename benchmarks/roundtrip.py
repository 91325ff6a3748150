"""Exactness and speed of the exact encoders' round trips (DPM-Encoder and the edit-friendly
encoder), against DDIM inversion.

For each configuration and each exact encoder: encode B held-out handwritten digits, decode, and
report the max abs error of decode(encode(x0)) - x0 and the encode/decode wall time. DDIM inversion (deterministic,
eta = 0) is shown at several step counts: it is only approximately invertible. The "trailing"
rows have a deterministic, clipped last step from t_S > 0, solved by Newton's method
(:mod:`dpmlatent.rootfinding`): their encode time is the price of exactness there.

    .venv/bin/python benchmarks/roundtrip.py [--model ddpm-handwritten|tiny] [--batch 16]
"""

import argparse
import time

from diffusers.utils import logging as diffusers_logging

import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel

from dpmlatent import data, zoo
from dpmlatent.encoder import ddim_decode, ddim_invert, dpm_encode, edit_friendly_encode
from dpmlatent.latent import decode


def _tiny_unet():
    torch.manual_seed(0)
    return UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
                       block_out_channels=(8, 16), norm_num_groups=4,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"), attention_head_dim=8).eval()


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ddpm-handwritten", help="a zoo diffusion model, or 'tiny'")
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(2)
    diffusers_logging.set_verbosity_error()  # float64 casts warn once per call
    if args.model == "tiny":
        unet, base = _tiny_unet(), DDIMScheduler(beta_schedule="squaredcos_cap_v2").config
    else:
        pipe = zoo.load(args.model)
        unet, base = pipe.unet, pipe.scheduler.config
    x0 = data.handwritten_digits("test").images[: args.batch]

    configs = []
    for eta in (0.1, 0.5, 1.0):
        for steps in (10, 50, 100):
            configs.append((f"DDIM eta={eta}", DDIMScheduler.from_config(base), eta, steps, 1.0))
    configs.append(("DDIM eta=0.5 strength=0.5", DDIMScheduler.from_config(base), 0.5, 50, 0.5))
    configs.append(("DDIM eta=0.5 SD-style", DDIMScheduler.from_config(base, set_alpha_to_one=False, steps_offset=1), 0.5, 50, 1.0))
    configs.append(("DDPM", DDPMScheduler.from_config(base), 1.0, 50, 1.0))
    # a deterministic, clipped last step from t_S > 0: the Newton solve of dpmlatent.rootfinding
    for steps in (10, 20, 50):
        configs.append(("DDIM eta=1 trailing (Newton)", DDIMScheduler.from_config(base, timestep_spacing="trailing"),
                        1.0, steps, 1.0))

    print(f"model: {args.model}   batch: {args.batch}   torch threads: {torch.get_num_threads()}")
    print(f"{'encoder':<14} {'config':<32} {'steps':>5} {'dtype':>8} {'max |err|':>10} {'encode s':>9} {'decode s':>9}")
    encoders = {"DPM-Encoder": dpm_encode, "edit-friendly": edit_friendly_encode}
    for name, sched, eta, steps, strength in configs:
        for label, encode in encoders.items():
            for dtype in (torch.float32, torch.float64):
                u, x = unet.to(dtype), x0.to(dtype)
                gen = torch.Generator().manual_seed(0)
                z, t_enc = _timed(lambda: encode(u, sched, x, eta=eta, num_inference_steps=steps,
                                                 strength=strength, generator=gen))
                with torch.no_grad():
                    y, t_dec = _timed(lambda: decode(u, sched, z, eta=eta))
                err = (y - x).abs().max().item()
                print(f"{label:<14} {name:<32} {steps:>5} {str(dtype)[6:]:>8} {err:>10.2e} {t_enc:>9.2f} {t_dec:>9.2f}")
    unet.float()
    for clip in (True, False):
        for steps in (10, 20, 50, 100, 200):
            sched = DDIMScheduler.from_config(base, clip_sample=clip)
            z, t_enc = _timed(lambda: ddim_invert(unet, sched, x0, num_inference_steps=steps))
            with torch.no_grad():
                y, t_dec = _timed(lambda: ddim_decode(unet, sched, z))
            err = (y - x0).abs().max().item()
            name = f"clip {'on' if clip else 'off'}"
            print(f"{'DDIM inversion':<14} {name:<32} {steps:>5} {'float32':>8} {err:>10.2e} {t_enc:>9.2f} {t_dec:>9.2f}")


if __name__ == "__main__":
    main()
