"""When a figure needs the operator's attention, and how that is shown."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Level(Enum):
    """How much a figure needs attention; ``style`` is the Rich style it is drawn in."""

    OK = ""
    WARNING = "bold yellow"
    CRITICAL = "bold red"

    @property
    def style(self) -> str:
        return self.value


def _level(value: float | None, warning: float, critical: float) -> Level:
    if value is None or value < warning:
        return Level.OK
    return Level.CRITICAL if value >= critical else Level.WARNING


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Limits above which depth, age of the oldest pending task and failure rate are coloured.

    A value at or above ``*_warning`` shows yellow, at or above ``*_critical`` red.
    """

    depth_warning: int = 100
    depth_critical: int = 1_000
    oldest_age_warning_s: float = 60.0
    oldest_age_critical_s: float = 600.0
    failure_rate_warning: float = 0.05
    failure_rate_critical: float = 0.20

    def __post_init__(self) -> None:
        for name, warning, critical in (
            ("depth", self.depth_warning, self.depth_critical),
            ("oldest age", self.oldest_age_warning_s, self.oldest_age_critical_s),
            ("failure rate", self.failure_rate_warning, self.failure_rate_critical),
        ):
            if warning < 0 or critical < warning:
                raise ValueError(
                    f"{name} thresholds need 0 <= warning <= critical, "
                    f"got warning={warning}, critical={critical}"
                )

    def depth(self, depth: int) -> Level:
        """Level of a queue holding ``depth`` waiting tasks (pending + delayed)."""
        return _level(depth, self.depth_warning, self.depth_critical)

    def oldest_age(self, seconds: float | None) -> Level:
        """Level of a queue whose oldest ready task has waited ``seconds``."""
        return _level(seconds, self.oldest_age_warning_s, self.oldest_age_critical_s)

    def failure_rate(self, rate: float) -> Level:
        """Level of a failure ratio (errors / finished) in the recent window."""
        return _level(rate, self.failure_rate_warning, self.failure_rate_critical)
