"""Helpers shared by the benchmark scripts."""

import time


def best_of(fn, repeats: int = 3) -> float:
    "Best wall time of `repeats` calls (the least disturbed by other load on a noisy machine)."
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)
