"""Leave-one-out of the latency predictor on a cached profile's random calibration plans.

For each of the profile's random calibration plans (the first `--random` of them; the uniform
warm-start plans the profile adds after them are always kept in the fit, and never scored,
since a check draws random plans only), the predictor is fitted on every other plan and
predicts the one left out. Prints within10, MAPE and Spearman over all of them and per
regime (eager plans; plans compiled for their int8 layers), then the largest misses. Costs
no measurement: it reads the profile only.

Usage: python bench/predictor_loo.py PROFILE.json [--random 40]
(profiles live under <autocompress cache>/profiles/<model>/; `autocompress profile` prints
the path.)
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    from scipy.stats import spearmanr

    from autocompress.config import Plan
    from autocompress.latency.predictor import LatencyPredictor
    from autocompress.latency.profile import DEFAULT_CALIBRATION_PLANS, Profile

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--random", type=int, default=DEFAULT_CALIBRATION_PLANS)
    args = parser.parse_args(argv)
    profile = Profile.from_json(args.profile.read_text())
    calibration = profile.calibration
    predicted, measured, regimes = [], [], []
    for i in range(min(args.random, len(calibration))):
        rest = calibration[:i] + calibration[i + 1 :]
        fitted = LatencyPredictor(dataclasses.replace(profile, calibration=rest))
        plan = Plan.from_dict(calibration[i]["plan"])
        predicted.append(fitted.predict_ratio(plan))
        measured.append(calibration[i]["ratio"])
        regimes.append(fitted.features(plan)[0])
    p, m, r = np.array(predicted), np.array(measured), np.array(regimes)
    error = p / m - 1

    def line(mask: np.ndarray) -> str:
        rho = spearmanr(p[mask], m[mask])[0] if mask.sum() > 2 else float("nan")
        return (
            f"within10={np.mean(abs(error[mask]) <= 0.1):.2f} mape={np.mean(abs(error[mask])):.3f} "
            f"spearman={rho:.2f} n={int(mask.sum())}"
        )

    print(f"all: {line(np.ones(len(m), bool))}")
    for regime in sorted(set(regimes)):
        print(f"{regime}: {line(r == regime)}")
    print("largest misses (measured, predicted, error, regime):")
    for i in np.argsort(-abs(error))[:5]:
        print(f"  {m[i]:.3f} {p[i]:.3f} {error[i]:+.1%} {r[i]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
