"""Do the book's intervals for a *difference of two Frechet distances* cover the truth?

Chapter 4 compares two translators by the difference of their FDs to one fixed set of real target
features (``matching.matched_difference(..., "frechet")``). This benchmark checks interval schemes
for that difference where the answer is known: Gaussian "features" of two methods on the same
inputs (an input effect shared by both methods and by its seeds, plus per-seed noise), with
population moments known in closed form, so the population FD difference to the fixed reference is
exact. Two cases: the methods' feature covariances differ (FD's finite-sample bias differs between
them and does not cancel in the difference) or are equal (it cancels). For each scheme it reports
how often the 95% interval contains the truth, the mean bias and the spread (sd over data sets) of
its estimate, and its mean half-width / 1.96 (the standard error it claims; a valid scheme claims at
least the spread):

* ``bootstrap (BCa, with replacement)``: the inputs are resampled with replacement (each with all
  its seeds), both FDs recomputed, BCa interval: the scheme chapter 4 used until 2026-12-05;
* ``jackknife, plain estimate``: the plug-in estimate +- 1.96 jackknife standard errors;
* ``jackknife, bias-corrected``: around ``n theta - (n - 1) mean(theta_(i))``
  (:func:`dpmlatent.evidence.jackknife_ci`): the scheme chapter 4 uses now.

A valid 95% interval covers in about 95% of the data sets (Monte Carlo s.e. 2 points at 100).

    python benchmarks/fd_interval_coverage.py                       # D = 16 and 128, both cases
    python benchmarks/fd_interval_coverage.py --dims 128 --replicates 300 --no-bootstrap
"""

import argparse
import time
from statistics import NormalDist

import torch

from dpmlatent import evidence, metrics

BOOT, PLAIN, CORRECTED = "bootstrap (BCa, with replacement)", "jackknife, plain estimate", "jackknife, bias-corrected"


def simulate(dim: int, equal: bool, inputs: int, seeds: int, replicates: int, n_resamples: int,
             bootstrap: bool) -> dict:
    f64 = dict(dtype=torch.float64)
    ref, truth, draw = metrics.simulated_fd_difference(dim, equal=equal, reference_size=1000, noise=0.5,
                                                       generator=torch.Generator().manual_seed(0))
    names = ((BOOT,) if bootstrap else ()) + (PLAIN, CORRECTED)
    found = {k: {"estimate": [], "low": [], "high": []} for k in names}
    everyone = torch.arange(inputs)
    for r in range(replicates):
        fa, fb = draw(inputs, seeds)                      # an input effect both methods share, per-seed noise
        est = ref(fa.reshape(-1, dim)) - ref(fb.reshape(-1, dim))
        jack = evidence.jackknife_ci(est, ref.leave_one_out(fa) - ref.leave_one_out(fb))
        out = {CORRECTED: jack, PLAIN: (est, est - jack.half_width, est + jack.half_width)}
        if bootstrap:
            iv = evidence.bootstrap_ci(everyone, statistic=lambda i: ref(fa[i].reshape(-1, dim)) - ref(fb[i].reshape(-1, dim)),
                                       n_resamples=n_resamples, generator=torch.Generator().manual_seed(r))
            out[BOOT] = iv
        for name, v in out.items():
            e, lo, hi = (v.estimate, v.low, v.high) if isinstance(v, evidence.Interval) else v
            for key, x in zip(("estimate", "low", "high"), (e, lo, hi)):
                found[name][key].append(x)
    rows = {}
    for name, f in found.items():
        e, lo, hi = (torch.tensor(f[k], **f64) for k in ("estimate", "low", "high"))
        rows[name] = {"coverage": float(((lo <= truth) & (truth <= hi)).double().mean()), "bias": float(e.mean() - truth),
                      "spread": float(e.std()), "claimed se": float(((hi - lo) / 2 / NormalDist().inv_cdf(0.975)).mean())}
    return {"truth": truth, "rows": rows}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dims", type=int, nargs="+", default=[16, 128], help="feature dimensions (chapter 4: 128)")
    ap.add_argument("--inputs", type=int, default=256)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--replicates", type=int, default=100, help="simulated data sets per dimension and case")
    ap.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples per interval")
    ap.add_argument("--no-bootstrap", action="store_true", help="skip the (slow) bootstrap scheme")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"{args.inputs} inputs x {args.seeds} seeds, {args.replicates} data sets per row\n")
    print("| D | covariances | true FD_a - FD_b | interval | coverage of 95% | bias of the estimate | "
          "spread of the estimate (sd) | claimed se (half-width / 1.96) |")
    print("|---|---|---|---|---|---|---|---|")
    for dim in args.dims:
        for equal in (False, True):
            t0 = time.time()
            out = simulate(dim, equal, args.inputs, args.seeds, args.replicates, args.resamples, not args.no_bootstrap)
            for name, r in out["rows"].items():
                print(f"| {dim} | {'equal' if equal else 'unequal'} | {out['truth']:.3f} | {name} | {r['coverage']:.2f} | "
                      f"{r['bias']:+.3f} | {r['spread']:.3f} | {r['claimed se']:.3f} |", flush=True)
            print(f"(D = {dim}, {'equal' if equal else 'unequal'}: {time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
