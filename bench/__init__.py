"""Benchmarks: each prints figures and compares with the raw limit of the same machine."""
