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

A second table is chapter 6's case: the float64 UNet forward and forward + backward (guidance
differentiates through the sampler), with ATen's convolution (``slow_conv2d`` for float64: one small
matrix product per image) against the same convolution written as one ``unfold`` and one matrix
product over the whole batch (``--no-unfold`` skips it), and the largest difference of the outputs.

    .venv/bin/python benchmarks/throughput.py [--runs 5] [--threads 2] [--batches 16 64 256]
"""

import argparse
import contextlib
import statistics
import time

import torch
import torch.nn.functional as F
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


def _unfold_conv(self, x, weight, bias):
    """``nn.Conv2d._conv_forward`` as one unfold and one matrix product over the whole batch."""
    if self.padding_mode != "zeros" or self.groups != 1 or isinstance(self.padding, str):
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)
    b, _, h, w = x.shape
    kh, kw = weight.shape[-2:]
    cols = F.unfold(x, (kh, kw), dilation=self.dilation, padding=self.padding, stride=self.stride)   # (B, C k k, L)
    ho = (h + 2 * self.padding[0] - self.dilation[0] * (kh - 1) - 1) // self.stride[0] + 1
    wo = (w + 2 * self.padding[1] - self.dilation[1] * (kw - 1) - 1) // self.stride[1] + 1
    out = cols.transpose(1, 2).reshape(-1, cols.shape[1]) @ weight.reshape(len(weight), -1).T          # (B L, C_out)
    if bias is not None:
        out = out + bias
    return out.reshape(b, ho * wo, -1).transpose(1, 2).reshape(b, -1, ho, wo)


@contextlib.contextmanager
def unfold_convolutions():
    """Every ``nn.Conv2d`` computes as :func:`_unfold_conv` inside the block."""
    original = torch.nn.Conv2d._conv_forward
    torch.nn.Conv2d._conv_forward = _unfold_conv
    try:
        yield
    finally:
        torch.nn.Conv2d._conv_forward = original


def float64_unet_table(batches, runs: int) -> None:
    """Chapter 6's float64 UNet: forward and forward + backward, ATen convolutions against unfold + matmul."""
    unet = zoo.load("ddpm-handwritten", dtype=torch.float64).unet.requires_grad_(False)

    def timed(fn):
        fn()
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    print(f"\nfloat64 ddpm UNet: ATen convolutions vs one unfold + matmul per convolution (images/s)")
    print(f"{'batch':>5} {'forward ATen':>13} {'forward unfold':>15} {'fwd+bwd ATen':>13} {'fwd+bwd unfold':>15} {'max |diff|':>11}")
    for b in batches:
        x = torch.randn(b, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

        def fwd():
            with torch.inference_mode():
                return unet(x, 500).sample

        def fwd_bwd():
            xx = x.clone().requires_grad_(True)
            unet(xx, 500).sample.square().sum().backward()
            return xx.grad

        row = {}
        for name in ("aten", "unfold"):
            with unfold_convolutions() if name == "unfold" else contextlib.nullcontext():
                row[name] = (b / timed(fwd), b / timed(fwd_bwd), fwd(), fwd_bwd())
        diff = max(float((row["aten"][2] - row["unfold"][2]).abs().max()),
                   float((row["aten"][3] - row["unfold"][3]).abs().max()))
        print(f"{b:>5} {row['aten'][0]:>13.0f} {row['unfold'][0]:>15.0f} {row['aten'][1]:>13.0f} "
              f"{row['unfold'][1]:>15.0f} {diff:>11.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="timed calls per setting (median)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--no-unfold", action="store_true", help="skip the float64 convolution comparison")
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
    if not args.no_unfold:
        float64_unet_table(sorted({*args.batches, 48}), args.runs)


if __name__ == "__main__":
    main()
