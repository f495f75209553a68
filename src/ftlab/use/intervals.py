"""95% bootstrap intervals for the comparisons an evaluation reports.

A paired bootstrap resamples the documents (with replacement) and keeps each document's two scores together, so
what varies is which documents were asked, not how the two models did on the same one: the interval of the mean
difference is the 2.5th to 97.5th percentile of the resampled means (Efron and Tibshirani, 1993). An interval
that excludes 0 says the difference is unlikely to be an accident of which documents were drawn.
"""

from typing import Dict, Sequence

import numpy as np


def mean_interval(values: Sequence[float], resamples: int, seed: int) -> Dict[str, float]:
    """{"mean", "low", "high"}: the mean of `values` and its 95% percentile-bootstrap interval."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        return {"mean": None, "low": None, "high": None}
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(resamples, data.size))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"mean": float(data.mean()), "low": float(low), "high": float(high)}


def paired(base: Sequence[float], tuned: Sequence[float], resamples: int, seed: int) -> Dict[str, float]:
    """{"base", "tuned", "difference", "low", "high", "n"}: the two means over the same documents, and the 95%
    interval of the mean of tuned - base, document by document."""
    if len(base) != len(tuned):
        raise ValueError(f"paired scores need the same documents ({len(base)} base, {len(tuned)} tuned)")
    diff = mean_interval(np.asarray(tuned, dtype=np.float64) - np.asarray(base, dtype=np.float64), resamples, seed)
    return {
        "base": float(np.mean(base)) if len(base) else None,
        "tuned": float(np.mean(tuned)) if len(tuned) else None,
        "difference": diff["mean"],
        "low": diff["low"],
        "high": diff["high"],
        "n": len(base),
    }
