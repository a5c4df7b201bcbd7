"""Rates from cumulative counters, divided by the time that really passed.

A refresh is never exactly `interval` seconds apart (the collector's own work,
a slow terminal, a paused view), so the divisor is the measured time between
the two samples, as bpftop does. The first sample of a key has no rate: a
rate needs two points, and showing 0 there would be a lie.
"""
from typing import Dict, Hashable, Mapping, Optional

Counters = Mapping[str, int]


class RateTracker:
    """Remembers the previous sample per key; `update` returns per-second rates for keys seen twice."""

    def __init__(self):
        self._previous: Dict[Hashable, Counters] = {}
        self._previous_time: Optional[float] = None

    def update(self, now: float, samples: Mapping[Hashable, Counters]) -> Dict[Hashable, Dict[str, float]]:
        elapsed = None if self._previous_time is None else now - self._previous_time
        rates = {}
        if elapsed is not None and elapsed > 0:
            for key, counters in samples.items():
                before = self._previous.get(key)
                if before is None:
                    continue
                rates[key] = {
                    name: (value - before[name]) / elapsed
                    for name, value in counters.items()
                    # A counter that went backwards was reset (a freed buffer's inode reused, a
                    # drained map): no honest rate for this interval.
                    if name in before and value >= before[name]
                }
        self._previous = {key: dict(counters) for key, counters in samples.items()}
        self._previous_time = now
        return rates
