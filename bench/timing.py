"""Timing shared by the benches: the median of repeated calls, after a warm-up."""

import time

import numpy as np


def median_seconds(fn, repeats: int, warmup: int = 3) -> float:
    """The median wall time of ``fn()`` over ``repeats`` calls, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))
