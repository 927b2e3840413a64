"""Confidence intervals for recall@k and Pareto dominance, with no dependency beyond numpy.

Why this interval (see ``recall_interval``):

Per-query recall@k is a fraction ``hits / k`` in [0, 1], not a Bernoulli outcome, and the k
neighbours of one query are strongly correlated (a hard query tends to miss several of them).
A Wilson interval on the total hits (n * k "trials") therefore overstates the information in
the sample and is too narrow. The honest unit of replication is the query, so the interval is a
Student-t interval over the per-query recall values: the central limit theorem applies to their
mean whatever their distribution, and it is deterministic (no resampling, so a tuning search
over ef sees no interval noise). The t-interval alone collapses to a point when every sampled
query has the same recall (typically all 1.0 at large ef), which would claim certainty from a
finite sample; the reported interval is therefore the union of the t-interval and the Wilson
interval on the total hits, which is never degenerate and is the narrowest interval the data
could support if the k neighbours of a query were independent.
"""

from __future__ import annotations

import math
from functools import lru_cache
from statistics import NormalDist

import numpy as np


def normal_quantile(probability: float) -> float:
    """Quantile of the standard normal distribution."""
    return NormalDist().inv_cdf(probability)


def _t_two_sided_mass(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with integer ``df`` (Abramowitz & Stegun 26.7.3-4), t >= 0."""
    theta = math.atan(t / math.sqrt(df))
    cos2 = math.cos(theta) ** 2
    if df % 2 == 1:
        total, term = 0.0, math.cos(theta)
        for j in range(1, (df - 1) // 2 + 1):
            if j > 1:
                term *= cos2 * (2.0 * j - 2.0) / (2.0 * j - 1.0)
            total += term
        return 2.0 / math.pi * (theta + math.sin(theta) * total) if df > 1 else 2 * theta / math.pi
    total, term = 1.0, 1.0
    for j in range(1, df // 2):
        term *= cos2 * (2.0 * j - 1.0) / (2.0 * j)
        total += term
    return math.sin(theta) * total


def _t_density(t: float, df: int) -> float:
    log_norm = math.lgamma((df + 1) / 2.0) - math.lgamma(df / 2.0) - 0.5 * math.log(df * math.pi)
    return math.exp(log_norm - (df + 1) / 2.0 * math.log1p(t * t / df))


@lru_cache(maxsize=4096)  # pure; a RecallMonitor asks for the same few df on every update
def t_quantile(probability: float, df: int) -> float:
    """Quantile of Student's t distribution with integer ``df`` degrees of freedom.

    Starts from the Cornish-Fisher expansion about the normal quantile and refines it with
    Newton steps on the exact integer-df distribution function.
    """
    if not 0.0 < probability < 1.0:
        raise ValueError(f"probability: must be in (0, 1), got {probability}")
    if df < 1:
        raise ValueError(f"df: must be >= 1, got {df}")
    if probability < 0.5:
        return -t_quantile(1.0 - probability, df)
    if df == 1:
        return math.tan(math.pi * (probability - 0.5))
    z = normal_quantile(probability)
    z2 = z * z
    g1 = (z2 + 1.0) * z / 4.0
    g2 = ((5.0 * z2 + 16.0) * z2 + 3.0) * z / 96.0
    g3 = (((3.0 * z2 + 19.0) * z2 + 17.0) * z2 - 15.0) * z / 384.0
    g4 = ((((79.0 * z2 + 776.0) * z2 + 1482.0) * z2 - 1920.0) * z2 - 945.0) * z / 92160.0
    nu = float(df)
    t = z + g1 / nu + g2 / nu**2 + g3 / nu**3 + g4 / nu**4
    for _ in range(8):
        error = 0.5 + 0.5 * _t_two_sided_mass(max(t, 0.0), df) - probability
        step = error / max(_t_density(t, df), 1e-300)
        t -= step
        if abs(step) < 1e-12 * max(1.0, abs(t)):
            break
    return t


def wilson_interval(successes: float, trials: int, confidence: float) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion."""
    if trials <= 0:
        return 0.0, 1.0
    z = normal_quantile(0.5 + confidence / 2.0)
    p = successes / trials
    z2n = z * z / trials
    centre = (p + z2n / 2.0) / (1.0 + z2n)
    half = z * math.sqrt(max(p * (1.0 - p) / trials + z2n / (4.0 * trials), 0.0)) / (1.0 + z2n)
    return max(0.0, centre - half), min(1.0, centre + half)


def recall_interval(
    per_query_recall: np.ndarray, k: int, confidence: float = 0.95
) -> tuple[float, float]:
    """Two-sided ``confidence`` interval for the mean recall@k of the query population.

    ``per_query_recall`` holds one recall@k value (hits / k) per query. The interval is the
    union of a Student-t interval over the per-query values and the Wilson interval on the total
    hits out of n * k (see the module docstring for why), clipped to [0, 1].
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence: must be in (0, 1), got {confidence}")
    values = np.asarray(per_query_recall, dtype=np.float64).ravel()
    n = int(values.size)
    if n == 0:
        raise ValueError("per_query_recall: is empty")
    mean = float(values.mean())
    if n >= 2:
        sd = float(values.std(ddof=1))
        half = t_quantile(0.5 + confidence / 2.0, n - 1) * sd / math.sqrt(n)
        t_low, t_high = mean - half, mean + half
    else:
        t_low, t_high = 0.0, 1.0
    hits = float(np.round(values.sum() * k))
    w_low, w_high = wilson_interval(hits, n * k, confidence)
    return max(0.0, min(t_low, w_low)), min(1.0, max(t_high, w_high))


def dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """True when ``a`` is at least as good as ``b`` everywhere and better somewhere.

    Both are tuples of objectives to maximise (negate the ones to minimise).
    """
    at_least = all(x >= y for x, y in zip(a, b))
    better = any(x > y for x, y in zip(a, b))
    return at_least and better


def pareto_indices(objectives: list[tuple[float, ...]]) -> list[int]:
    """Indices of the non-dominated rows (all objectives maximised), in input order.

    Exact duplicates do not dominate each other, so both stay on the frontier.
    """
    return [
        i
        for i, candidate in enumerate(objectives)
        if not any(dominates(other, candidate) for j, other in enumerate(objectives) if j != i)
    ]
