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

A second table is the ddpm UNet's memory layout at the chapters' batches (float32 at 256 for
chapters 4 and 5, float64 at 48 and 64 for chapters 6 and 7): forward and forward + backward
(guidance differentiates through the sampler) with ATen's convolutions in NCHW, in channels-last
(``zoo.load(memory_format=torch.channels_last)``), and written as one ``unfold`` and one matrix
product over the whole batch (``--no-unfold`` skips that; ``--no-layouts`` the table), with the
largest difference from NCHW. ``--compile`` adds ``torch.compile`` (inductor, needs a C++ compiler)
of the float32 UNet inside a 50-step sampler: speed-up, compile time and recompile time.

    .venv/bin/python benchmarks/throughput.py [--runs 5] [--threads 2] [--batches 16 64 256] [--compile]
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
    seconds = _timed(lambda: [torch.mm(a, b) for _ in range(4)], runs) / 4
    return 2 * n ** 3 / seconds / 1e9


def _timed(fn, runs: int) -> float:
    """Median seconds of ``runs`` calls of ``fn()`` after one warm-up call."""
    fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(fn, batch: int, runs: int) -> tuple[float, float]:
    """(GFLOP per image, images per second) of ``fn()``, one forward pass over ``batch`` images."""
    with torch.inference_mode():
        counter = FlopCounterMode(display=False)
        with counter:
            fn()
        flops = counter.get_total_flops()
        seconds = _timed(fn, runs)
    return flops / batch / 1e9, batch / seconds


def unet_passes(unet, x: torch.Tensor):
    """``(forward, forward_backward)`` of ``unet`` at ``x`` (timestep 500): the forward pass under
    ``inference_mode``, and a forward + backward to the input, as guidance differentiates through it;
    each returns its output (the sample, the input's gradient)."""
    def forward():
        with torch.inference_mode():
            return unet(x, 500).sample

    def forward_backward():
        xx = x.clone().requires_grad_(True)
        unet(xx, 500).sample.square().sum().backward()
        return xx.grad

    return forward, forward_backward


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


def layout_table(cases, runs: int, unfold: bool) -> None:
    """The ddpm UNet forward and forward + backward (guidance and chapter 3's Jacobians differentiate
    through it) with ATen's convolutions in the default layout, in channels-last
    (``zoo.load(memory_format=torch.channels_last)``) and, optionally, written as one unfold + matmul."""
    variants = ("NCHW", "channels_last") + (("unfold",) if unfold else ())
    print("\nddpm UNet by memory layout (images/s; max |diff| against NCHW over both passes)")
    print(f"{'dtype':<8} {'batch':>5} {'variant':<14} {'forward':>8} {'fwd+bwd':>8} {'max |diff|':>11}")
    for dtype, b in cases:
        x = torch.randn(b, 1, 8, 8, dtype=dtype, generator=torch.Generator().manual_seed(0))
        base = None
        for variant in variants:
            fmt = torch.channels_last if variant == "channels_last" else None
            unet = zoo.load("ddpm-handwritten", dtype=dtype, memory_format=fmt).unet.requires_grad_(False)
            fwd, fwd_bwd = unet_passes(unet, x)
            with unfold_convolutions() if variant == "unfold" else contextlib.nullcontext():
                f, fb = b / _timed(fwd, runs), b / _timed(fwd_bwd, runs)
                outs = (fwd(), fwd_bwd())
            base = base or outs
            diff = max(float((o - r).abs().max()) for o, r in zip(outs, base))
            print(f"{str(dtype).removeprefix('torch.'):<8} {b:>5} {variant:<14} {f:>8.0f} {fb:>8.0f} {diff:>11.1e}")


#: ATen ops that do the counted FLOPs (convolutions and matrix products); everything else is bookkeeping.
FLOP_OPS = ("conv", "mm", "addmm", "bmm", "baddbmm", "matmul", "linear", "scaled_dot_product")


def op_table(cases, runs: int = 3, top: int = 6) -> None:
    """Where one UNet pass spends its time (``torch.profiler``, self CPU time per ATen op): the share in
    the ops that do the FLOPs (convolutions, matrix products, attention) and the largest others."""
    from torch.profiler import ProfilerActivity, profile

    print("\nddpm UNet: time per ATen op (torch.profiler, self CPU time; FLOP ops = convolutions, matmuls, attention)")
    for dtype, b, backward in cases:
        unet = zoo.load("ddpm-handwritten", dtype=dtype).unet.requires_grad_(False)
        x = torch.randn(b, 1, 8, 8, dtype=dtype, generator=torch.Generator().manual_seed(0))
        call = unet_passes(unet, x)[1 if backward else 0]
        call()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(runs):
                call()
        ops = [(e.key, e.self_cpu_time_total) for e in prof.key_averages() if e.self_cpu_time_total > 0]
        total = sum(t for _, t in ops)
        flop = sum(t for k, t in ops if any(f in k.removeprefix("aten::") for f in FLOP_OPS))
        largest = ", ".join(f"{k.removeprefix('aten::')} {t / total:.0%}" for k, t in sorted(ops, key=lambda o: -o[1])[:top])
        print(f"{str(dtype).removeprefix('torch.'):<8} batch {b:>3} {'forward + backward' if backward else 'forward':<18} "
              f"FLOP ops {flop / total:4.0%} | {largest}")


def compile_table(batch: int = 256, steps: int = 50) -> None:
    """``torch.compile`` (inductor) of the float32 ddpm UNet inside a ``steps``-step DDIM sampler (eta = 1)
    at ``batch`` images: eager against compiled, the first compiled call (which compiles), and the first
    call at another batch size (which compiles again). Needs a C++ compiler."""
    import os
    import tempfile

    from diffusers import DDIMScheduler

    # a cold start, as on a learner's first run: inductor's caches in a fresh folder
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="throughput-inductor-")
    pipe = zoo.load("ddpm-handwritten")
    sched = DDIMScheduler.from_config(pipe.scheduler.config)

    def sample(unet, n):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(n, 1, 8, 8, generator=g)
        sched.set_timesteps(steps)
        for t in sched.timesteps:
            x = sched.step(unet(x, t).sample, t, x, eta=1.0, generator=g).prev_sample
        return x

    def once(fn):
        t0 = time.perf_counter()
        out = fn()
        return time.perf_counter() - t0, out

    with torch.inference_mode():
        eager = _timed(lambda: sample(pipe.unet, batch), 3)
        compiled = torch.compile(pipe.unet)
        first, a = once(lambda: sample(compiled, batch))
        steady = _timed(lambda: sample(compiled, batch), 3)
        other, _ = once(lambda: sample(compiled, batch - 56))
        diff = float((a - sample(pipe.unet, batch)).abs().max())
    print(f"\ntorch.compile of the float32 ddpm UNet, {steps}-step DDIM sampler (eta = 1) at batch {batch} (seconds)")
    print(f"{'eager':>7} {'compiled':>9} {'speed-up':>9} {'first call':>11} {'first call at batch ' + str(batch - 56):>25} "
          f"{'max |diff| of samples':>22}")
    print(f"{eager:>7.2f} {steady:>9.2f} {eager / steady:>8.2f}x {first:>11.1f} {other:>25.1f} {diff:>22.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="timed calls per setting (median)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--no-unfold", action="store_true", help="skip the unfold + matmul convolutions")
    parser.add_argument("--no-layouts", action="store_true", help="skip the memory-layout table")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (needs a C++ compiler)")
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
    if not args.no_layouts:
        # chapters 4 and 5 run float32 batches of 256; chapter 6 float64 batches of 48, chapter 7 of 64
        layout_table([(torch.float32, 256), (torch.float64, 48), (torch.float64, 64)], args.runs, not args.no_unfold)
        op_table([(torch.float32, 256, False), (torch.float64, 48, True)])
    if args.compile:
        compile_table()


if __name__ == "__main__":
    main()
