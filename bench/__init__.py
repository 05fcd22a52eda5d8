"""Benchmarks: figures with their ratio to a baseline measured in the same run (`make bench`).

They never fail on a time: machines here are shared and noisy; the ratios are what to watch.
"""
