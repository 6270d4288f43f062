"""The latency model: a plan's kernels from the model's shapes, their times profiled on a target,
and the predictor fitted to measured plans."""
