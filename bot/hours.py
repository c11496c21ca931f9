"""Business hours: when the business is open, in its own time zone, and what the agent is told.

``RAPPORT_BUSINESS_HOURS`` is JSON::

    {"timezone": "Europe/Madrid",
     "weekly": {"mon": [["09:00", "14:00"], ["16:00", "19:00"]], "sat": [["10:00", "13:00"]]},
     "closed": ["2026-12-25"]}

A day missing from ``weekly`` is a closed day; a ``closed`` date is closed all day whatever its
weekday. Times are wall-clock times in ``timezone`` (daylight saving included, by ``zoneinfo``);
an interval ends after it starts, within its day (``"24:00"`` is not a time: end at ``"23:59"``).
Without the setting the business counts as always open.
"""

from __future__ import annotations

import itertools
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: How far ahead the next opening is looked for (a business closed longer has none).
LOOKAHEAD_DAYS = 60
#: Closed dates the prompt mentions, soonest first.
PROMPT_CLOSED_DATES = 5


class Weekday(StrEnum):
    """A day of the week, as ``weekly`` names it (Monday first, as ``date.weekday()``)."""

    MON = "mon"
    TUE = "tue"
    WED = "wed"
    THU = "thu"
    FRI = "fri"
    SAT = "sat"
    SUN = "sun"

    @property
    def full_name(self) -> str:
        """The day's English name ("Monday")."""
        return _FULL_NAMES[self]


_FULL_NAMES = dict(
    zip(
        Weekday,
        ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
        strict=True,
    )
)
_DAYS = list(Weekday)


def known_zone(name: str) -> str:
    """``name`` when it is an IANA time zone this machine knows.

    Raises:
        ValueError: It is not (the message gives an example of one).
    """
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise ValueError(f"unknown time zone {name!r} (e.g. Europe/Madrid)") from e
    return name


class BusinessHours(BaseModel):
    """The business's opening hours.

    Attributes:
        timezone: An IANA time zone ("Europe/Madrid").
        weekly: Open intervals ``(start, end)`` per weekday; a missing day is closed.
        closed: Dates closed all day (holidays), in the business's time zone.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    timezone: str
    weekly: dict[Weekday, list[tuple[time, time]]] = Field(default_factory=dict)
    closed: frozenset[date] = frozenset()

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        return known_zone(name)

    @model_validator(mode="after")
    def _ordered_intervals(self) -> BusinessHours:
        for day, intervals in self.weekly.items():
            ordered = sorted(intervals)
            for start, end in ordered:
                if end <= start:
                    raise ValueError(f"{day.value}: {start:%H:%M}-{end:%H:%M} ends before starting")
            for (_, end), (start, _) in itertools.pairwise(ordered):
                if start < end:
                    raise ValueError(f"{day.value}: intervals overlap")
            self.weekly[day] = ordered
        return self

    @property
    def zone(self) -> ZoneInfo:
        """The business's time zone."""
        return ZoneInfo(self.timezone)

    def is_open(self, at: datetime) -> bool:
        """Whether the business is open at ``at`` (an aware datetime, any zone)."""
        local = at.astimezone(self.zone)
        return any(start <= local.time() < end for start, end in self._intervals(local.date()))

    def closes_at(self, at: datetime) -> datetime | None:
        """When the interval open at ``at`` ends; None when closed at ``at``."""
        local = at.astimezone(self.zone)
        for start, end in self._intervals(local.date()):
            if start <= local.time() < end:
                return datetime.combine(local.date(), end, tzinfo=self.zone)
        return None

    def next_opening(self, at: datetime) -> datetime | None:
        """The next time the business opens after ``at``; None within :data:`LOOKAHEAD_DAYS`."""
        local = at.astimezone(self.zone)
        for offset in range(LOOKAHEAD_DAYS + 1):
            day = local.date() + timedelta(days=offset)
            for start, _ in self._intervals(day):
                opening = datetime.combine(day, start, tzinfo=self.zone)
                if opening > local:
                    return opening
        return None

    def _intervals(self, day: date) -> list[tuple[time, time]]:
        if day in self.closed:
            return []
        return self.weekly.get(_DAYS[day.weekday()], [])

    def prompt_note(self, at: datetime) -> str:
        """What the agent is told at call start: the hours, and whether it is open right now."""
        local = at.astimezone(self.zone)
        days = "; ".join(
            f"{day.full_name} {' and '.join(f'{s:%H:%M}-{e:%H:%M}' for s, e in self.weekly[day])}"
            for day in Weekday
            if self.weekly.get(day)
        )
        lines = [f"Business hours ({self.timezone} time): {days or 'none set'}."]
        upcoming = sorted(d for d in self.closed if d >= local.date())[:PROMPT_CLOSED_DATES]
        if upcoming:
            lines.append("Closed all day on " + ", ".join(_day(d) for d in upcoming) + ".")
        now = f"It is now {_FULL_NAMES[_DAYS[local.weekday()]]} {_day(local.date())}, {local:%H:%M}"
        if (closing := self.closes_at(local)) is not None:
            lines.append(f"{now}: the business is OPEN, until {closing:%H:%M}.")
        else:
            lines.append(f"{now}: the business is CLOSED. {self.reopening(local)}")
        return "\n".join(lines)

    def reopening(self, at: datetime) -> str:
        """A sentence saying when the business opens next ("It opens again Monday at 09:00.")."""
        opening = self.next_opening(at)
        if opening is None:
            return "No opening is scheduled in the coming weeks."
        local = at.astimezone(self.zone)
        if opening.date() == local.date():
            return f"It opens again today at {opening:%H:%M}."
        weekday = _FULL_NAMES[_DAYS[opening.weekday()]]
        return f"It opens again {weekday} {_day(opening.date())} at {opening:%H:%M}."


def _day(day: date) -> str:
    return f"{day.day} {day:%B %Y}"
