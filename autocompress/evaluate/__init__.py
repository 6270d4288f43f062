"""Judging a compressed model: short distillation fine-tune, BatchNorm recalibration, metrics."""
