"""Memory and time of one guidance gradient through the diffusion sampler, with and without checkpointing.

Guidance needs the gradient of an energy of G(z) with respect to the code z, i.e. backpropagation
through every sampler step. Plain autograd stores every step's activations, so memory grows with
the number of steps; `dpmlatent.guidance.diffusion_generator(checkpoint=True)` recomputes each step
during the backward pass instead. For each number of DDIM steps, this prints the wall time of one
forward + backward (median of --repeats) and the peak extra resident memory it needed, with both
settings, and checks that both give the same gradient.

Each setting runs in a fresh subprocess: the peak RSS (VmHWM, reset through /proc/self/clear_refs,
Linux) above the resident memory before the first forward + backward is its memory (later runs reuse
memory the allocator kept); the time is the median of the following runs. On a CUDA device it
reports torch.cuda.max_memory_allocated above the allocated memory instead.

    .venv/bin/python benchmarks/guidance_memory.py [--steps 5 10 20 40] [--batch 16] [--device cpu]
"""

import argparse
import json
import subprocess
import sys
import time

import torch

CHILD = r"""
import json, sys, time, torch
from diffusers import DDIMScheduler
from dpmlatent import zoo
from dpmlatent.energies import classifier_energy
from dpmlatent.guidance import diffusion_generator, latent_energy
from dpmlatent.latent import sample_latent

steps, batch, checkpoint, device, repeats, threads = json.loads(sys.argv[1])
torch.set_num_threads(threads)
device = torch.device(device)

def rss_kb(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1])

unet = zoo.load("ddpm-handwritten", device=device).unet.requires_grad_(False)
sched = DDIMScheduler.from_config(zoo.load("ddpm-handwritten").scheduler.config)
clf = zoo.load("digit-classifier", device=device).requires_grad_(False)
z = sample_latent((batch, 1, 8, 8), sched, steps, 1.0, generator=torch.Generator().manual_seed(0), device=device)
u = latent_energy(diffusion_generator(unet, sched, eta=1.0, checkpoint=checkpoint), classifier_energy(clf, 7), weight=1.0)
times = []
for r in range(repeats + 1):                      # memory from the first run, time from the others
    if r == 0:
        with open("/proc/self/clear_refs", "w") as f:   # reset VmHWM (the peak) to the current RSS
            f.write("5")
        base = rss_kb("VmRSS")
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(); base_cuda = torch.cuda.memory_allocated()
    flat = z.flatten().requires_grad_(True)
    start = time.perf_counter()
    u(z.unflatten(flat)).sum().backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
    times.append(time.perf_counter() - start)
    if r == 0:
        peak = (torch.cuda.max_memory_allocated() - base_cuda) / 2**20 if device.type == "cuda" \
            else (rss_kb("VmHWM") - base) / 1024
print(json.dumps({"seconds": sorted(times[1:])[len(times[1:]) // 2], "peak_mb": peak, "grad": flat.grad.double().norm().item()}))
"""


def run(steps, batch, checkpoint, device, repeats, threads):
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps([steps, batch, checkpoint, device, repeats, threads])],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, nargs="+", default=[5, 10, 20, 40])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    what = "peak extra CUDA memory" if args.device.startswith("cuda") else "peak extra RSS"
    print(f"one forward + backward of U(z) = |z|^2/2 + E_classifier(G(z)) through ddpm-handwritten, "
          f"batch {args.batch}, DDIM eta=1, {args.device}, {args.threads} threads; {what}")
    print(f"{'steps':>5} {'plain s':>8} {'plain MB':>9} {'ckpt s':>7} {'ckpt MB':>8} {'time x':>7} {'memory /':>9} {'same grad':>9}")
    start = time.perf_counter()
    for steps in args.steps:
        plain = run(steps, args.batch, False, args.device, args.repeats, args.threads)
        ckpt = run(steps, args.batch, True, args.device, args.repeats, args.threads)
        same = abs(plain["grad"] - ckpt["grad"]) <= 1e-5 * abs(plain["grad"])
        print(f"{steps:>5} {plain['seconds']:>8.2f} {plain['peak_mb']:>9.0f} {ckpt['seconds']:>7.2f} {ckpt['peak_mb']:>8.0f} "
              f"{ckpt['seconds'] / plain['seconds']:>7.2f} {plain['peak_mb'] / max(ckpt['peak_mb'], 1):>9.1f} {str(same):>9}")
    print(f"({time.perf_counter() - start:.0f} s in all)")


if __name__ == "__main__":
    main()
