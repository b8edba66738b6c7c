"""A fake sweep-point runner shared by the report tests: records calls, fails on request."""

from collections.abc import Callable

from benchmarks.reporting.sweep import SweepPoint


class RecordingRunner:
    """Returns ``metrics(point)``; raises RuntimeError(message) for ids listed in ``failing``."""

    def __init__(self, metrics: Callable[[SweepPoint], dict], failing: tuple[str, ...] = (),
                 message: str = "boom at {id}") -> None:
        self.metrics = metrics
        self.failing = failing
        self.message = message
        self.calls: list[str] = []

    def __call__(self, point: SweepPoint) -> dict:
        self.calls.append(point.id)
        if point.id in self.failing:
            raise RuntimeError(self.message.format(id=point.id))
        return self.metrics(point)
