"""The search: Optuna study, per-trial objectives, and the Pareto front.

(Named `optimize` rather than `search` so the subpackage never shadows `autocompress.search()`.)
"""
