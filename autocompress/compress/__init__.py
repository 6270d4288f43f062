"""Compression methods and the one function that applies a plan to a model."""
