"""LRDM at the book's scale: training per lambda, reconstruction from r, sampling from the prior.

For every shipped LRDM (``zoo.names("lrdm")``) the first table prints what its manifest recorded
while training (``python -m dpmlatent.train NAME``): lambda, KL warm-up, wall-clock training time and
threads, the held-out KL per image (nats) and the active units (dimensions of r with a held-out KL
above 0.01 nats, of 64).

The second table measures each model on held-out handwritten digits:

  * reconstruction: ``lrdm.reconstruction_scores`` -- each input decoded ``--draws`` times from its
    posterior mean with fresh noise (DDIM, ``--eta``, ``--steps``): mean squared pixel error, SSIM,
    the share of draws the independent judge (``digit-judge``) labels like the input, and the spread
    (per-pixel standard deviation over draws);
  * prior samples: ``--num-samples`` images from r ~ N(0, I) and fresh noise, the zoo quality table's
    columns (``metrics.quality_row`` with ``digit-classifier``: confident share, smallest and largest
    class share, FD to the held-out digits), and the same for images decoded from the held-out
    digits' posterior means: "prior hole" = FD(prior) - FD(posterior means), over equal numbers of
    images (``--num-images`` of each; FD's bias depends on the sample size).

``ddpm-handwritten`` (no representation) is the reference row of the prior-sample columns.

    .venv/bin/python benchmarks/lrdm.py [--num-images 256] [--num-samples 512] [--draws 4]
"""

import argparse
import time

import torch
from diffusers import DDIMScheduler

from dpmlatent import data, lrdm, metrics, zoo
from dpmlatent.reporting import Column, Table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-images", type=int, default=256, help="held-out digits reconstructed")
    parser.add_argument("--num-samples", type=int, default=512, help="prior samples per model")
    parser.add_argument("--draws", type=int, default=4, help="reconstructions per input")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps")
    parser.add_argument("--eta", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    names = zoo.names("lrdm")
    rows = []
    for name in names:
        info, cfg = zoo.manifest(name), dict(zoo.ZOO[name].config)
        rows.append([name, f"{cfg.get('kl_weight'):g}", f"{cfg.get('kl_warmup', 0)}",
                     f"{info['train_seconds'] / 60:.0f} min", f"{info['torch_threads']}",
                     f"{info['test_kl_nats']:.1f}", f"{info['test_active_units']}"])
    print(Table([Column("model"), Column("lambda", ">"), Column("warm-up", ">"), Column("training", ">"),
                 Column("threads", ">"), Column("held-out KL (nats)", ">"), Column("active units", ">")], rows,
                title="Training, as the manifests record it"))

    test = data.handwritten_digits("test")
    pick = torch.randperm(len(test.labels), generator=torch.Generator().manual_seed(args.seed))[:args.num_images]
    x0, y = test.images[pick], test.labels[pick]
    judge, clf = zoo.load("digit-judge"), zoo.load("digit-classifier")

    def columns(q):
        return [f"{q.confident:.2f}", f"{q.min_class:.3f}", f"{q.max_class:.3f}", f"{q.frechet:.1f}"]

    start = time.perf_counter()
    cols = columns(metrics.model_quality("ddpm-handwritten", zoo.load("ddpm-handwritten"), clf, test.images,
                                         num_samples=args.num_samples, num_inference_steps=args.steps,
                                         eta=args.eta, seed=args.seed, progress=False))
    rows = [["ddpm-handwritten", "", "", "", "", "", *cols, "", f"{time.perf_counter() - start:.0f} s"]]
    for name in names:
        model = zoo.load(name)
        sched = DDIMScheduler.from_config(model.scheduler.config)
        labels = y if model.config.num_classes else None
        start = time.perf_counter()
        rec = lrdm.reconstruction_scores(model, sched, x0, judge=judge, labels=labels, draws=args.draws,
                                         eta=args.eta, num_inference_steps=args.steps, seed=args.seed)
        gen = torch.Generator().manual_seed(args.seed)
        r = lrdm.prior_sample(model, args.num_samples, generator=gen)
        prior_labels = (torch.arange(args.num_samples) % 10) if model.config.num_classes else None
        prior = lrdm.generate(model, sched, r, eta=args.eta, num_inference_steps=args.steps, generator=gen,
                              labels=prior_labels)
        cols = columns(metrics.quality_row(name, prior, clf, test.images))
        # the hole compares equal numbers of images (FD's bias depends on the sample size)
        n = min(len(x0), len(prior))
        hole = (metrics.quality_row(name, prior[:n], clf, test.images).frechet
                - metrics.quality_row(name, rec.images[0][:n], clf, test.images).frechet)
        rows.append([name, f"{rec.mse.mean():.4f}", f"{rec.ssim.mean():.3f}", f"{rec.agree.mean():.2f}",
                     f"{rec.spread.mean():.3f}", "", *cols, f"{hole:+.1f}",
                     f"{time.perf_counter() - start:.0f} s"])
    print(Table([Column("model"), Column("rec. MSE", ">"), Column("rec. SSIM", ">"), Column("judge agrees", ">"),
                 Column("spread", ">"), Column("", ">"), Column("prior: confident", ">"), Column("min class", ">"),
                 Column("max class", ">"), Column("FD", ">"), Column("prior hole (FD)", ">"), Column("time", ">")],
                rows, title=f"Held-out digits: {args.num_images} reconstructed x {args.draws} draws, "
                            f"{args.num_samples} prior samples (DDIM {args.steps} steps, eta {args.eta:g})"))


if __name__ == "__main__":
    main()
