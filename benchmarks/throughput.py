"""How fast do the book's models run on this machine, against what its CPU can do?

The roofline the chapters are judged against (issue 19). For every model the chapters call in a
loop (the pixel DDPM's UNet, the text-to-image UNet, the classifiers, the GAN generator), at the
batch sizes the chapters use and in the dtypes they use (float32; float64 where chapters 6 and 7
run the diffusion model in float64 on a CPU), it prints:

* GFLOP per image of one forward pass, counted by ``torch.utils.flop_counter.FlopCounterMode``
  (matmuls and convolutions: the work that can run at the matmul peak);
* images per second of that forward pass under ``torch.inference_mode`` (median of ``--runs``
  timed calls after a warm-up) and the GFLOP/s that makes;
* that rate as a share of this machine's *measured* matmul peak in the same dtype (a large square
  ``torch.mm``, the best the BLAS achieves here): 50% or more is "within 2x of the roofline".

A model far below its roofline spends its time outside matmuls (small tensors, per-op overhead,
normalisation and attention bookkeeping), which batching more work per call can fix and a faster
BLAS cannot.

    .venv/bin/python benchmarks/throughput.py [--runs 5] [--threads 2] [--batches 16 64 256]
"""

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from dpmlatent import zoo
from dpmlatent.text import caption, encode_prompts


def matmul_peak(dtype: torch.dtype, n: int = 1024, runs: int = 5) -> float:
    """GFLOP/s of an ``n x n`` matmul in ``dtype`` (the median of ``runs`` timed calls of 4 matmuls)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        for _ in range(4):
            torch.mm(a, b)
        times.append((time.perf_counter() - t0) / 4)
    return 2 * n ** 3 / statistics.median(times) / 1e9


def measure(fn, batch: int, runs: int) -> tuple[float, float]:
    """(GFLOP per image, images per second) of ``fn()``, one forward pass over ``batch`` images."""
    with torch.inference_mode():
        counter = FlopCounterMode(display=False)
        with counter:
            fn()
        flops = counter.get_total_flops()
        fn()                                                     # warm-up
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return flops / batch / 1e9, batch / statistics.median(times)


def models(dtype: torch.dtype):
    """name -> (batch -> a zero-argument forward pass), for the models the chapters call in loops."""
    out = {}
    ddpm = zoo.load("ddpm-handwritten", dtype=dtype).unet
    out["ddpm UNet (UNet2DModel)"] = lambda b: (lambda x=torch.randn(b, 1, 8, 8, dtype=dtype): ddpm(x, 500).sample)
    if dtype == torch.float32:
        t2i = zoo.load("t2i-digits")
        cond = encode_prompts(t2i.text_encoder, t2i.tokenizer, [caption(3, "handwritten")])

        def t2i_call(b):
            x, c = torch.randn(b, 1, 8, 8), cond.expand(b, -1, -1)
            return lambda: t2i.unet(x, 500, encoder_hidden_states=c).sample
        out["t2i UNet (UNet2DConditionModel)"] = t2i_call
        clf = zoo.load("digit-classifier")
        out["digit-classifier"] = lambda b: (lambda x=torch.randn(b, 1, 8, 8): clf(x))
        gan = zoo.load("gan-handwritten")
        out["gan-handwritten generator"] = lambda b: (lambda z=torch.randn(b, gan.config.latent_dim): gan(z))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="timed calls per setting (median)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 64, 256])
    args = parser.parse_args()
    if args.runs < 1 or args.threads < 1 or min(args.batches) < 1:
        raise ValueError("--runs, --threads and every batch size must be >= 1")
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    head = f"{'model':<34} {'dtype':<8} {'batch':>5} {'GFLOP/img':>10} {'img/s':>9} {'GFLOP/s':>8} {'of peak':>8}"
    for dtype in (torch.float32, torch.float64):
        peak = matmul_peak(dtype)
        print(f"\nmatmul peak ({str(dtype).removeprefix('torch.')}, 1024 x 1024): {peak:.1f} GFLOP/s")
        print(head)
        for name, make in models(dtype).items():
            for b in args.batches:
                gflop, ips = measure(make(b), b, args.runs)
                rate = gflop * ips
                print(f"{name:<34} {str(dtype).removeprefix('torch.'):<8} {b:>5} {gflop:>10.4f} {ips:>9.0f} "
                      f"{rate:>8.1f} {rate / peak:>8.0%}")


if __name__ == "__main__":
    main()
