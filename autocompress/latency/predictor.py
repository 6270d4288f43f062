"""Predict a plan's latency on a target from its profile, in well under a millisecond.

Two layers of model, both fitted on what `latency.profile` measured:
1. Kernel times: a lookup table per Conv/Linear/LSTM geometry and number format (fp32, int8,
   bf16) over (input, output) channels, and per attention core over the heads kept, bilinear
   between the measured points; a kernel the profile never timed falls back to a
   scikit-learn ridge regression in log space over all timed kernels of its format (of fp32
   when it timed none).
2. Whole model: a non-negative linear regression (scikit-learn) from per-plan sums of those
   kernel times, of multiply-accumulates and of output sizes per format, normalised by the
   dense model's, to the measured latency ratio. The multiply-accumulates carry the compute
   where a kernel timed alone is mostly per-call overhead (OpenVINO at batch 1: 35 us of a
   50 us layer; leave-one-out within-10% on digits-resnet's calibration plans rose from 0.43
   to 0.89 with them). Plans that deploy eagerly (no int8 layer) and plans compiled for their
   int8 layers are fitted separately: compiled graphs fuse, and convert between formats. The
   compiled fit also counts kernels per format (a low-rank layer is two calls: with the fp32
   count, leave-one-out Spearman on digits-resnet's compiled plans rose from 0.53 to 0.78)
   and the elements converted between int8 and float layers (`ModelShapes.boundary_elems`)
   or quantized at run time by dynamic int8 layers (`ModelShapes.dynamic_elems`).
   The eager fit counts kernels too: an LSTM unrolled for a low rank or fewer bits runs its
   recurrent Linear and the gates' elementwise ops once per step (digits-lstm leave-one-out
   on eager plans: within-10% 0.26 without the count, 0.91 with it). Plans that keep an
   LSTM whole (one fused call) get a fit of their own where the profile timed at least
   `MIN_FORM_PLANS` of them in their regime: shared with unrolled plans, the fit had one
   slope for both, and predicted pruned whole LSTMs up to 16% slow (digits-lstm
   leave-one-out on eager whole plans: within-10% 0.78, bias +5.4%, with the split 1.00, -0.2%;
   on 100 fresh plans of every kind, within-10% rose from 0.73 to 0.92).

The prediction is a ratio to the dense model; times the study's dense latency it gives ms.
Plans are fitted in the frame they were timed in, as ratios to the reference they were timed
against (a twin of the dense model for compiled plans; `Target.reference_for`), and carried
back by its ratio to the dense model: the profile's, or one the caller timed
(`predict_ratio(to_dense=)`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from autocompress.config import Plan
from autocompress.latency.kernel import BF16, FP32, INT8, Kernel
from autocompress.latency.profile import Profile
from autocompress.latency.shapes import ModelShapes

EAGER, COMPILED = "eager", "compiled"
# Calibration plans of a regime that keep an LSTM whole needed for them to get a fit of their
# own; with fewer they share their regime's. Eager features are 7, the fit's unknowns 8.
MIN_FORM_PLANS = 8


class _Table:
    """Times of one geometry on a (cin x cout) grid; bilinear inside, clamped outside."""

    def __init__(self, entries: Sequence[dict[str, Any]]) -> None:
        self.cins = np.array(sorted({e["cin"] for e in entries}), dtype=float)
        self.couts = np.array(sorted({e["cout"] for e in entries}), dtype=float)
        self.ms = np.full((len(self.cins), len(self.couts)), np.nan)
        for e in entries:
            i = int(np.searchsorted(self.cins, e["cin"]))
            j = int(np.searchsorted(self.couts, e["cout"]))
            self.ms[i, j] = e["ms"]
        self.complete = not np.isnan(self.ms).any()

    def __call__(self, cin: int, cout: int) -> float:
        rows = [np.interp(cout, self.couts, row) for row in self.ms]
        return float(np.interp(cin, self.cins, rows))


def _macs(geometry: dict[str, Any], cin: int, out_elems: int) -> int:
    """Multiply-accumulates of one call of a Conv/Linear kernel, of a whole LSTM (four
    gates, each from the input and the hidden state, at every step), or of an attention core
    (scores and weighted values: each output element sums over every token twice)."""
    if geometry["type"] == "Attention":
        return 2 * geometry["tokens"] * out_elems
    if geometry["type"] == "LSTM":
        hidden = out_elems // geometry["in_size"][0]
        return 4 * (cin + hidden) * out_elems
    area = math.prod(geometry.get("kernel", [1]))
    return (1 if geometry.get("depthwise") else cin) * area * out_elems


def _kernel_features(geometry: dict[str, Any], cin: int, cout: int, out_elems: int) -> list[float]:
    """Log-space features of a kernel for the fallback regression."""
    area = math.prod(geometry.get("kernel", [1]))
    spatial = max(1, out_elems // max(cout, 1))
    return [
        math.log(_macs(geometry, cin, out_elems)),
        math.log(out_elems),
        math.log(cin * spatial),
        math.log(area),
        float(geometry["type"] == "Linear"),
    ]


class LatencyPredictor:
    """A fitted predictor for one model on one target.

    Args:
        profile: what was measured (`latency.profile.profile_model`). Without calibration
            plans (every one failed to build) only the dense model anchors the eager fit.
    """

    def __init__(self, profile: Profile) -> None:
        from sklearn.linear_model import LinearRegression, Ridge

        self.profile = profile
        self.shapes = ModelShapes.from_dict(profile.shapes)
        by_kind: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for entry in profile.lut:
            by_kind.setdefault((entry["geometry"], entry["compute"]), []).append(entry)
        self._tables = {kind: _Table(e) for kind, e in by_kind.items()}
        self._tables = {kind: t for kind, t in self._tables.items() if t.complete}
        # Per format: (coefficients, intercept) of the ridge fit, applied with numpy.
        self._fallbacks: dict[str, tuple[np.ndarray, float]] = {}
        for compute in {e["compute"] for e in profile.lut}:
            entries = [e for e in profile.lut if e["compute"] == compute]
            x = [
                _kernel_features(json.loads(e["geometry"]), e["cin"], e["cout"], e["out_elems"])
                for e in entries
            ]
            ridge = Ridge(alpha=1e-3).fit(x, [math.log(e["ms"]) for e in entries])
            self._fallbacks[compute] = (ridge.coef_, float(ridge.intercept_))
        self.kernel_ms = lru_cache(maxsize=65536)(self._kernel_ms)
        self._macs = lru_cache(maxsize=65536)(
            lambda k: _macs(json.loads(k.geometry), k.cin, k.out_elems)
        )
        self._dense = self._totals(self.shapes.kernels(Plan()))
        points = [
            (Plan.from_dict(p["plan"]), p["ratio"], p.get("to_dense", 1.0))
            for p in profile.calibration
        ]
        # Compiled plans are timed against a twin of the dense model (`Target.reference_for`;
        # eager ones against the dense model itself, ratio 1.0) whose ratio to the dense model
        # is timed once per process, and that ratio drifts between processes more than the
        # plans' ratios to the twin do: each regime is fitted in its reference's frame and
        # carried back by the profile's ratio (`to_dense`, per regime), or the caller's.
        frames: dict[str, list[float]] = {}
        for plan, _, to_dense in points:
            frames.setdefault(self.regime(plan), []).append(to_dense)
        self.to_dense = {regime: float(np.median(r)) for regime, r in frames.items()}
        # The dense model itself is an eager plan at ratio 1 by definition: in its frame, 1
        # over its reference's ratio.
        points.append((Plan(), 1.0, self.to_dense.get(EAGER, 1.0)))
        # Keyed (regime, None) for every plan of a regime, (regime, whole) for one form.
        samples: dict[tuple[str, bool | None], tuple[list[list[float]], list[float]]] = {}
        for plan, ratio, to_dense in points:
            regime, row = self.features(plan)
            for key in ((regime, None), (regime, self.shapes.keeps_recurrence(plan))):
                xs, ys = samples.setdefault(key, ([], []))
                xs.append(row)
                ys.append(ratio / to_dense)
        # A form's own fit, where it has enough plans and is not every plan of its regime.
        self._models = {
            key: LinearRegression(positive=True).fit(np.array(xs), np.array(ys))
            for key, (xs, ys) in samples.items()
            if key[1] is None or MIN_FORM_PLANS <= len(ys) < len(samples[(key[0], None)][1])
        }

    def _kernel_ms(self, kernel: Kernel) -> float:
        """One kernel's time alone in its format: from its lookup table, else the fallback
        regression of its format (of fp32 when the profile timed none of that format).
        Cached per instance as `kernel_ms`."""
        table = self._tables.get((kernel.geometry, kernel.compute))
        if table is not None:
            return table(kernel.cin, kernel.cout)
        coef, intercept = self._fallbacks.get(kernel.compute, self._fallbacks[FP32])
        geometry = json.loads(kernel.geometry)
        row = _kernel_features(geometry, kernel.cin, kernel.cout, kernel.out_elems)
        return float(math.exp(float(np.dot(coef, row)) + intercept))

    def _totals(self, kernels: Sequence[Kernel]) -> dict[str, float]:
        totals = {"ms": 0.0, "elems": 0.0, "macs": 0.0, "count": float(len(kernels))}
        for compute in (FP32, INT8, BF16):
            for sum_of in ("ms", "elems", "macs", "n"):
                totals[f"{sum_of}_{compute}"] = 0.0
        for k in kernels:
            ms, macs = self.kernel_ms(k), self._macs(k)
            totals["ms"] += ms
            totals["elems"] += k.out_elems
            totals["macs"] += macs
            totals[f"ms_{k.compute}"] += ms
            totals[f"elems_{k.compute}"] += k.out_elems
            totals[f"macs_{k.compute}"] += macs
            totals[f"n_{k.compute}"] += 1
        return totals

    def regime(self, plan: Plan) -> str:
        """How a plan deploys: COMPILED with an int8 layer, else EAGER (`features`)."""
        return COMPILED if self.shapes.quantized(plan) else EAGER

    def features(self, plan: Plan) -> tuple[str, list[float]]:
        """The regime a plan deploys in and its regression features (relative to dense).

        A plan with an int8 layer deploys as a compiled graph (int8 kernels need inductor);
        any other runs eagerly, bf16 layers casting their input and output.
        """
        t = self._totals(self.shapes.kernels(plan))
        d = self._dense
        macs = [t[f"macs_{c}"] / d["macs"] for c in (FP32, INT8, BF16)]
        if self.regime(plan) == EAGER:
            return EAGER, [
                t["ms"] / d["ms"], t["elems"] / d["elems"], t[f"n_{BF16}"] / d["count"], *macs,
                t["count"] / d["count"],
            ]  # fmt: skip
        return COMPILED, [
            *(t[f"ms_{c}"] / d["ms"] for c in (FP32, INT8, BF16)),
            *macs,
            *(t[f"elems_{c}"] / d["elems"] for c in (FP32, INT8, BF16)),
            *(t[f"n_{c}"] / d["count"] for c in (FP32, INT8, BF16)),
            self.shapes.boundary_elems(plan) / d["elems"],
            self.shapes.dynamic_elems(plan) / d["elems"],
        ]

    def predict_ratio(self, plan: Plan, *, to_dense: float | None = None) -> float:
        """The plan's deployed latency as a ratio to the dense model.

        Args:
            plan: the plan.
            to_dense: the ratio to the dense model of the reference the plan is timed
                against (`Target.reference_for`; 1.0 for the dense model itself), as this
                process measured it; None: the profile's for the plan's regime
                (`self.to_dense`).

        Raises:
            ValueError: the plan deploys in a regime the profile measured no plan of.
        """
        regime, row = self.features(plan)
        form = (regime, self.shapes.keeps_recurrence(plan))
        model = self._models.get(form, self._models.get((regime, None)))
        if model is None:
            raise ValueError(
                f"the profile measured no {regime} plans (with int8 layers); "
                "re-profile with the search space you search"
            )
        ratio = float(model.predict(np.array([row]))[0])
        ratio *= self.to_dense.get(regime, 1.0) if to_dense is None else to_dense
        return max(0.01, ratio)
