"""The zoo's training data, and the command that rebuilds a checkpoint.

    python -m dpmlatent.train NAME [--steps N] [--threads T] [--root DIR]

rebuilds ``checkpoints/NAME`` from scratch with the seed stored in :data:`dpmlatent.zoo.ZOO`
(same command, same seed, same thread count -> the same weights on the same machine).

Each kind's training loop lives in the kind's module (:data:`dpmlatent.zoo.KINDS`) and runs through
the shared :func:`dpmlatent.fitting.fit`; they are re-exported here: :func:`train_diffusion`
(the "simple" objective of Ho et al. 2020, :mod:`dpmlatent.diffusion`), :func:`train_text_to_image`,
:func:`train_classifier`, :func:`train_clip`, :func:`train_gan`.
"""

from __future__ import annotations

import argparse
import importlib
import time

import torch

from . import data, zoo

__all__ = ["DATASETS", "DOMAINS", "training_data", "TrainResult", "train_diffusion", "train_text_to_image",
           "train_classifier", "train_clip", "train_gan",
           "accuracy", "build", "main"]

#: Names re-exported from the kinds' modules, imported on first use (``train.train_diffusion``).
_REEXPORTS = {"TrainResult": "fitting", "train_diffusion": "diffusion", "train_text_to_image": "text_to_image",
              "train_classifier": "classifier", "accuracy": "classifier", "train_clip": "clip", "train_gan": "gan"}


def __getattr__(name: str):
    if name in _REEXPORTS:
        return getattr(importlib.import_module(f"dpmlatent.{_REEXPORTS[name]}"), name)
    raise AttributeError(f"module 'dpmlatent.train' has no attribute {name!r}")


DATASETS = ("handwritten", "handwritten-rare", "typeset-digits", "typeset-letters", "digits-mixed", "digits-domain",
            "digits-captioned", "toy-moons", "toy-ring", "fonts-zipf", "fonts-embedding")

#: Labels of the ``"digits-domain"`` data set (and of the domain classifier's outputs).
DOMAINS = ("handwritten", "typeset")


def training_data(dataset: str, split: str = "train") -> data.ImageData:
    """The images a zoo model is trained on.

    ``"handwritten-rare"`` = handwritten digits with :data:`dpmlatent.data.RARE_CLASS` cut to 2%
    (:func:`dpmlatent.data.rare_class_digits`); ``"digits-mixed"`` = handwritten + typeset digits labelled by digit; ``"digits-domain"`` =
    the same images labelled by domain (0 handwritten, 1 typeset, see :data:`DOMAINS`);
    ``"digits-captioned"`` = handwritten + typeset digits with captions
    (:func:`dpmlatent.text.captioned_digits`, returned as a ``CaptionedData``);
    ``"toy-*"`` = 2-D points as ``(N, 2, 1, 1)`` images, test split from another seed;
    ``"fonts-zipf"`` = typeface individuals with Zipf frequencies, labelled by digit
    (:func:`dpmlatent.data.zipf_fonts`); ``"fonts-embedding"`` = the embedding individuals, labelled
    by individual (:func:`dpmlatent.data.embedding_fonts`).
    """
    if dataset == "fonts-zipf":
        return data.zipf_fonts(split)
    if dataset == "fonts-embedding":
        return data.embedding_fonts(split)
    if dataset == "handwritten":
        return data.handwritten_digits(split)
    if dataset == "handwritten-rare":
        return data.rare_class_digits(split)
    if dataset == "typeset-digits":
        return data.typeset_digits(split)
    if dataset == "typeset-letters":
        return data.typeset_letters(split)
    if dataset == "digits-captioned":
        from .text import captioned_digits

        return captioned_digits(split)
    if dataset in ("digits-mixed", "digits-domain"):
        a, b = data.handwritten_digits(split), data.typeset_digits(split)
        if dataset == "digits-mixed":
            labels = torch.cat([a.labels, b.labels])
        else:
            labels = torch.cat([torch.zeros_like(a.labels), torch.ones_like(b.labels)])
        return data.ImageData(torch.cat([a.images, b.images]), labels, a.styles + b.styles)
    if dataset in ("toy-moons", "toy-ring"):
        data._check_split(split)
        seed = {"train": 0, "test": 1, "all": 2}[split]
        pts = data.toy_2d(dataset.removeprefix("toy-"), 4000 if split == "train" else 1000, seed=seed)
        return data.ImageData(pts[:, :, None, None], torch.zeros(len(pts), dtype=torch.int64),
                              ("toy",) * len(pts))
    raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")


def build(name: str, *, steps: int | None = None, root=None, progress: bool = True):
    """Train zoo entry ``name`` from scratch with its seed and write its checkpoint.

    The entry's :class:`~dpmlatent.zoo.Kind` does the work (``make``, ``fit``, ``save``); the
    manifest records the seed, steps, data set, thread count, torch version, the mean loss of the
    last 100 steps, the wall-clock training time and whatever the kind's ``fit`` adds.
    """
    entry = zoo.ZOO.get(name)
    if entry is None:
        raise ValueError(f"unknown model {name!r}; the zoo has {zoo.names()}")
    steps = entry.steps if steps is None else steps
    kind = zoo.kind_of(name).hooks()
    train = training_data(entry.dataset, "train")
    start = time.perf_counter()
    info = {"seed": entry.seed, "steps": steps, "dataset": entry.dataset,
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__}
    result = kind.fit(kind.make(entry, train), train, entry, steps=steps, progress=progress)
    info.update(result.info)
    info["final_loss_mean_last_100"] = round(sum(result.losses[-100:]) / min(100, steps), 5)
    info["train_seconds"] = round(time.perf_counter() - start, 1)
    return zoo.save_checkpoint(name, lambda folder: kind.save(result.model, folder), info, root)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dpmlatent.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=zoo.names())
    parser.add_argument("--steps", type=int, default=None, help="override the entry's steps")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--root", default=None, help="checkpoint folder (default: checkpoints/)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    path = build(args.name, steps=args.steps, root=args.root)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
