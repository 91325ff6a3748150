"""Can an embedding tell typeface individuals apart at 8x8, or does it need 16x16? (issue 20's first
measurement, before any generator is trained on fonts).

Individuals are :func:`dpmlatent.data.font_individuals` (22 faces x 5 synthetic variants). The faces
are split: ``--embed-faces`` faces (all their variants) train an :class:`dpmlatent.identity.IdentityEmbedding`
with a CosFace head; the remaining faces are held out. On the held-out individuals the table prints
the verification ROC AUC over all pairs of glyphs (same individual vs different individual, any
digit), the AUC against *other faces* only and against *other variants of the same face* only, and
the true-accept rate at the similarity threshold with a 1% false-accept rate.

    .venv/bin/python benchmarks/identity_verification.py [--steps 3000] [--per-digit 6] [--embed-faces 12]

First run (2026-12-05, defaults, 2 threads, AVX-512 Xeon): AUC all pairs 0.872 at 8x8 and 0.904 at
16x16 (vs other faces 0.876 / 0.906, vs other variants of the same face 0.834 / 0.876), true-accept
rate at 1% false accepts 0.25 / 0.33; training 57 / 74 s. Faces are told apart, but not well enough
for a "same individual" verdict at a low false-accept rate at either size: the next step is a
stronger embedding (more faces to train on, more steps, a larger margin) or fewer, better separated
individuals, before any generator is trained on fonts.
"""

import argparse
import time

import torch

from dpmlatent import data
from dpmlatent.identity import IdentityConfig, IdentityEmbedding, roc_auc, threshold_at_far, train_identity
from dpmlatent.reporting import Column, Table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--per-digit", type=int, default=6, help="glyphs per digit and individual")
    parser.add_argument("--embed-faces", type=int, default=12, help="faces whose variants train the embedding")
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n_var = len(data.FONT_VARIANTS)
    order = torch.randperm(len(data.FONT_FACES), generator=torch.Generator().manual_seed(args.seed))
    embed_faces = set(order[:args.embed_faces].tolist())
    rows = []
    for resolution in (8, 16):
        d = data.font_individuals(resolution=resolution, per_digit=args.per_digit, seed=args.seed)
        face = d.individuals // n_var
        train = torch.tensor([int(f) in embed_faces for f in face])
        torch.manual_seed(args.seed)
        model = IdentityEmbedding(IdentityConfig(resolution=resolution, dim=args.dim))
        start = time.perf_counter()
        train_identity(model, d.images[train], d.individuals[train], steps=args.steps, seed=args.seed, progress=False)
        seconds = time.perf_counter() - start
        held = ~train
        with torch.no_grad():
            e = model(d.images[held])
        ids, faces = d.individuals[held], face[held]
        sims = e @ e.T
        upper = torch.triu(torch.ones_like(sims, dtype=torch.bool), diagonal=1)
        same = (ids[:, None] == ids[None]) & upper
        other_face = (faces[:, None] != faces[None]) & upper
        sibling = (faces[:, None] == faces[None]) & (ids[:, None] != ids[None]) & upper
        negatives = sims[other_face | sibling]
        t = threshold_at_far(negatives, 0.01)
        rows.append([f"{resolution}x{resolution}", f"{int(held.sum())} glyphs, {len(ids.unique())} individuals",
                     f"{roc_auc(sims[same], negatives):.3f}", f"{roc_auc(sims[same], sims[other_face]):.3f}",
                     f"{roc_auc(sims[same], sims[sibling]):.3f}", f"{(sims[same] > t).double().mean():.2f}",
                     f"{seconds:.0f} s"])
    print(Table([Column("resolution"), Column("held out"), Column("AUC, all pairs", ">"), Column("AUC vs other faces", ">"),
                 Column("AUC vs same face, other variant", ">"), Column("TAR at FAR 1%", ">"), Column("training", ">")],
                rows, title=f"Verification on held-out faces ({len(data.FONT_FACES) - args.embed_faces} faces x {n_var} variants), "
                            f"embedding trained on {args.embed_faces} faces, {args.steps} steps"))


if __name__ == "__main__":
    main()
