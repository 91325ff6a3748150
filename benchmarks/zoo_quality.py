"""Quality table of the shipped diffusion models (issue: foundation, "quality bar").

For each digit diffusion model in the zoo (the letters model is a control domain, not measured here): 512 samples
with 50 DDIM steps (eta = 0, seed 0), and for each GAN 512 samples G(z) (seed 0), then
  * the share the zoo classifier labels with p >= 0.9        (bar: >= 0.80 for digit models)
  * the predicted-class histogram                            (bar: every class in [5%, 15%];
                                                               n/a for the model trained with rare sevens)
  * the Frechet distance in classifier features to the held-out real images,
and the classifier's own held-out accuracy (bar: >= 0.95).

    .venv/bin/python benchmarks/zoo_quality.py [--samples 512] [--json out.json]
"""

import argparse
import dataclasses
import json
import time

import torch

from dpmlatent import metrics, train, zoo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--json", default=None, help="also write the rows as JSON")
    args = parser.parse_args()
    torch.set_num_threads(2)

    classifier = zoo.load("digit-classifier")
    acc = {d: train.accuracy(classifier, train.training_data(d, "test"))
           for d in ("handwritten", "typeset-digits")}
    rows, seconds = [], {}
    digit_models = [n for n in zoo.names("diffusion")
                    if zoo.ZOO[n].dataset in ("handwritten", "handwritten-rare", "typeset-digits")]
    for name in digit_models:
        entry = zoo.ZOO[name]
        start = time.perf_counter()
        rows.append(metrics.model_quality(name, zoo.load(name), classifier,
                                          train.training_data(entry.dataset, "test").images,
                                          num_samples=args.samples, num_inference_steps=args.steps,
                                          progress=False))
        seconds[name] = time.perf_counter() - start

    for name in zoo.names("gan"):          # the GANs, same table: samples G(z), z ~ N(0, I)
        start = time.perf_counter()
        gan = zoo.load(name)
        with torch.no_grad():
            images = gan(torch.randn(args.samples, gan.config.latent_dim, generator=torch.Generator().manual_seed(0)))
        real = train.training_data("handwritten", "test").images     # every class, also for the rare-seven GAN
        rows.append(metrics.quality_row(name, images, classifier, real))
        seconds[name] = time.perf_counter() - start

    print("classifier held-out accuracy: " + ", ".join(f"{d} {a:.3f}" for d, a in acc.items())
          + f"   (bar >= 0.95: {'ok' if min(acc.values()) >= 0.95 else 'FAIL'})")
    print(metrics.format_table(rows))
    print()
    print(f"{'model':<28} " + " ".join(f"{c:>5}" for c in range(10)) + "  bars   seconds")
    for r in rows:
        ok = r.confident >= 0.8 and 0.05 <= r.min_class and r.max_class <= 0.15
        if zoo.ZOO[r.model].dataset == "handwritten-rare":    # trained to under-represent one class
            ok = None
        print(f"{r.model:<28} " + " ".join(f"{f:>5.3f}" for f in r.class_fractions)
              + f"  {'n/a ' if ok is None else 'ok  ' if ok else 'FAIL'}  {seconds[r.model]:>6.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"classifier_accuracy": acc, "rows": [dataclasses.asdict(r) for r in rows]}, f, indent=2)


if __name__ == "__main__":
    main()
