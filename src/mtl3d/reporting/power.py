"""How many seeds a study needs to detect a given difference, from the seed variance it measured.

Design: every seed trains the host and its ``+3d`` twin once (same seed, same data, same test images),
so the unit is the per-seed paired difference ``d_s = metric(host+3d, s) − metric(host, s)``. With its
standard deviation ``σ_d`` measured over the study's seeds, a two-sided paired t-test at level ``α``
detects a true difference ``δ`` with power ``P(|T| > t_{1−α/2, n−1})``, ``T ~ noncentral t(n−1, δ√n/σ_d)``
(``scipy.stats.nct``); the seeds needed are the smallest ``n ≥ 2`` reaching the requested power.
``σ_d`` from 3 seeds is itself uncertain (a χ² with 2 degrees of freedom): the table gives the number
for the measured value and for the upper end of its 80 % interval, so a study sized from it is not
sized from a lucky draw.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from mtl3d.reporting.compare import regularizer_pairs


def paired_t_power(n: int, effect: float, sd: float, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t-test with ``n`` pairs for a true mean difference ``effect``."""
    if n < 2 or not sd > 0:
        return math.nan
    df = n - 1
    crit = stats.t.ppf(1 - alpha / 2, df)
    nc = abs(effect) * math.sqrt(n) / sd
    upper, lower = float(stats.nct.sf(crit, df, nc)), float(stats.nct.cdf(-crit, df, nc))
    # scipy's noncentral t returns NaN far in the tails (large nc): there the lower tail is below its
    # nc = 0 value α/2 and vanishing, and the upper tail is the normal limit's
    if math.isnan(lower):
        lower = 0.0
    if math.isnan(upper):
        upper = float(stats.norm.sf(crit - nc))
    return min(1.0, upper + lower)


def seeds_needed(
    effect: float, sd: float, alpha: float = 0.05, power: float = 0.8, cap: int = 10_000
) -> float:
    """Smallest number of paired seeds whose t-test reaches ``power``; NaN when ``sd`` is unknown."""
    if not (sd > 0 and math.isfinite(sd)) or effect <= 0:
        return math.nan
    for n in range(2, cap + 1):
        if paired_t_power(n, effect, sd, alpha) >= power:
            return float(n)
    return math.inf


def paired_spread(
    summary: pd.DataFrame, dataset: str, task: str, metric: str
) -> list[tuple[str, int, float, float, float]]:
    """Per host with a ``+3d`` twin, from the per-seed paired differences ``metric(+3d) − metric(host)``:
    ``(host, seeds, mean, sd, sd_hi)``, ``sd_hi`` the upper end of the sd's 80 % interval."""
    sub = summary[(summary["dataset"] == dataset) & (summary["task"] == task) & (summary["metric"] == metric)]
    values = sub.pivot_table(index="seed", columns="variant", values="value", aggfunc="mean")
    out = []
    for host, twin in regularizer_pairs(list(values.columns)):
        d = (values[twin] - values[host]).dropna().to_numpy(dtype=float)
        n = len(d)
        sd = float(np.std(d, ddof=1)) if n >= 2 else math.nan
        # upper end of the 80 % interval of σ from n−1 degrees of freedom: σ·sqrt((n−1)/χ²_{0.1, n−1})
        sd_hi = sd * math.sqrt((n - 1) / stats.chi2.ppf(0.1, n - 1)) if n >= 2 else math.nan
        out.append((host, n, float(np.mean(d)) if n else math.nan, sd, sd_hi))
    return out


def seed_power_table(
    summary: pd.DataFrame,
    dataset: str,
    task: str = "semseg",
    metric: str = "mIoU",
    effect: float = 1.0,
    alpha: float = 0.05,
    power: float = 0.8,
) -> pd.DataFrame:
    """Per host with a ``+3d`` twin: seeds measured, mean and std of the paired seed differences, and the
    seeds needed to detect ``effect`` (in the metric's units) at the measured std and at its 80 % upper
    bound."""
    rows = []
    for host, n, mean, sd, sd_hi in paired_spread(summary, dataset, task, metric):
        rows.append(
            {
                "host": host,
                "task": task,
                "metric": metric,
                "seeds": n,
                "mean_diff": mean,
                "sd_diff": sd,
                "effect": effect,
                "seeds_needed": seeds_needed(effect, sd, alpha, power),
                "seeds_needed_sd80": seeds_needed(effect, sd_hi, alpha, power),
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "host",
            "task",
            "metric",
            "seeds",
            "mean_diff",
            "sd_diff",
            "effect",
            "seeds_needed",
            "seeds_needed_sd80",
        ],
    )


def interval_halfwidth(n: int, sd: float, alpha: float = 0.05) -> float:
    """Half-width of the two-sided t interval of a mean over ``n`` paired seeds with spread ``sd``."""
    if n < 2 or not sd >= 0:
        return math.nan
    return float(stats.t.ppf(1 - alpha / 2, n - 1) * sd / math.sqrt(n))


def seeds_for_interval(halfwidth: float, sd: float, alpha: float = 0.05, cap: int = 10_000) -> float:
    """Smallest number of paired seeds whose t interval is at most ``±halfwidth``; NaN when ``sd`` is
    unknown."""
    if not (sd >= 0 and math.isfinite(sd)) or halfwidth <= 0:
        return math.nan
    for n in range(2, cap + 1):
        if interval_halfwidth(n, sd, alpha) <= halfwidth:
            return float(n)
    return math.inf


def seed_interval_table(
    summary: pd.DataFrame,
    dataset: str,
    halfwidth: float = 1.5,
    task: str = "all",
    metric: str = "delta_m",
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Per host with a ``+3d`` twin: the spread of the per-seed paired differences (Δm by default), the
    half-width of the t interval it gives at the seeds measured, and the seeds a ``±halfwidth`` interval
    needs at that spread and at the upper end of the spread's 80 % interval."""
    rows = []
    for host, n, mean, sd, sd_hi in paired_spread(summary, dataset, task, metric):
        rows.append(
            {
                "host": host,
                "seeds": n,
                "mean_diff": mean,
                "sd_diff": sd,
                "halfwidth": interval_halfwidth(n, sd, alpha),
                "target": halfwidth,
                "seeds_needed": seeds_for_interval(halfwidth, sd, alpha),
                "seeds_needed_sd80": seeds_for_interval(halfwidth, sd_hi, alpha),
            }
        )
    columns = [
        "host",
        "seeds",
        "mean_diff",
        "sd_diff",
        "halfwidth",
        "target",
        "seeds_needed",
        "seeds_needed_sd80",
    ]
    return pd.DataFrame(rows, columns=columns)
