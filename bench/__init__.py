"""Benchmarks: each measures the project and a baseline in the same run (not part of the tests)."""

import statistics


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0 < q < 1) of the values, at 0.1 % resolution."""
    return statistics.quantiles(values, n=1000)[int(q * 1000) - 1] if len(values) > 1 else values[0]
