"""What runs now and how long is left: a plan of work units with an estimate that learns as it goes.

Every unit (a condition's training, a generation split, a judging pass) has a kind and an amount of
work (examples x epochs, prompts x new tokens, pairs). The time left is the remaining work of each kind
times that kind's measured seconds per unit of work; before a kind has been measured, a prior is used
(figures for the default model on a 2-core CPU). Skipped units (finished in an earlier run) cost
nothing and teach nothing.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import TextIO

# Seconds per unit of work on the 2-core development CPU, gemma-3-270m (refined by measurement).
PRIOR_SECONDS: dict[str, float] = {
    "mixture": 0.001,  # per example
    "train": 2.0,  # per example x epoch (model loading included)
    "generate": 0.01,  # per prompt x max new tokens
    "evaluate": 0.01,  # per response
    "judge": 0.05,  # per pair (both orders)
    "report": 5.0,  # per report
    "bench": 60.0,  # per lm-eval task or group
}


@dataclass
class Unit:
    key: str
    label: str
    kind: str
    work: float
    state: str = "todo"  # todo | running | done | skipped
    seconds: float = 0.0


def format_duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class ProgressPlan:
    """Prints one line when a unit starts and one when it ends, with the estimated time left."""

    def __init__(self, units: list[Unit], *, stream: TextIO | None = None, enabled: bool = True,
                 priors: dict[str, float] | None = None) -> None:
        self.units = {u.key: u for u in units}
        self.order = [u.key for u in units]
        self.stream = stream or sys.stdout
        self.enabled = enabled
        self.priors = {**PRIOR_SECONDS, **(priors or {})}
        self.started_at = time.perf_counter()
        self._unit_start = 0.0

    def rate(self, kind: str) -> float:
        measured = [u for u in self.units.values() if u.kind == kind and u.state == "done" and u.work > 0]
        work = sum(u.work for u in measured)
        if work > 0:
            return sum(u.seconds for u in measured) / work
        return self.priors.get(kind, 1.0)

    def remaining_seconds(self) -> float:
        left = 0.0
        for u in self.units.values():
            if u.state in ("todo", "running"):
                left += u.work * self.rate(u.kind)
        running = [u for u in self.units.values() if u.state == "running"]
        if running:
            left -= min(time.perf_counter() - self._unit_start, running[0].work * self.rate(running[0].kind))
        return max(0.0, left)

    def _index(self, key: str) -> str:
        return f"[{self.order.index(key) + 1}/{len(self.order)}]"

    def _print(self, text: str) -> None:
        if self.enabled:
            print(text, file=self.stream, flush=True)

    def start(self, key: str) -> None:
        unit = self.units[key]
        unit.state = "running"
        self._unit_start = time.perf_counter()
        self._print(f"{self._index(key)} {unit.label} (about {format_duration(self.remaining_seconds())} left in all)")

    def finish(self, key: str, seconds: float | None = None) -> None:
        unit = self.units[key]
        unit.seconds = time.perf_counter() - self._unit_start if seconds is None else seconds
        unit.state = "done"
        self._print(f"{' ' * len(self._index(key))} done in {format_duration(unit.seconds)}; about "
                    f"{format_duration(self.remaining_seconds())} left, {format_duration(self.elapsed())} so far")

    def skip(self, key: str, why: str = "already done") -> None:
        unit = self.units[key]
        unit.state = "skipped"
        self._print(f"{self._index(key)} {unit.label}: {why}, skipped")

    def elapsed(self) -> float:
        return time.perf_counter() - self.started_at
