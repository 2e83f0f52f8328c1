"""The one retry-delay formula: capped exponential, half fixed and half random."""

from __future__ import annotations

import random


def backoff_delay(attempt: int, first: float, cap: float) -> float:
    """Seconds before retry number `attempt` (0-based): about first * 2**attempt, at most cap.

    Half of the delay is random, so clients (or nodes) that failed together do not all come
    back at the same instant.
    """
    ceiling = min(cap, first * 2.0 ** min(attempt, 30))
    return ceiling / 2 + random.uniform(0, ceiling / 2)
