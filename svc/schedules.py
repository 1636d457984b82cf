"""Beat's schedule: the seed's daily report, overridden or extended by SVC_SCHEDULE / SVC_SCHEDULE_FILE.

An entry is ``{"task": "name", "cron": "m h dom mon dow"}`` or ``{"task": "name", "every": seconds}``,
with optional ``"args"`` and ``"kwargs"``; entries are keyed by name, and a name that exists replaces it
(``generate-report`` is the seed's entry).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from celery import Celery
from celery.schedules import crontab, maybe_schedule, schedule
from pydantic import BaseModel, ConfigDict, Field, model_validator

from svc.settings import Settings


class Entry(BaseModel):
    """One periodic task."""

    model_config = ConfigDict(extra="forbid")

    task: str
    cron: str | None = Field(None, description="minute hour day-of-month month day-of-week (UTC)")
    every: float | None = Field(None, gt=0, description="seconds between runs")
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_timing(self) -> Entry:
        if (self.cron is None) == (self.every is None):
            raise ValueError("give exactly one of `cron` or `every`")
        if self.cron is not None and len(self.cron.split()) != 5:
            raise ValueError("`cron` has five fields: minute hour day-of-month month day-of-week")
        return self

    def celery_schedule(self) -> Any:
        """The Celery schedule object for this entry."""
        if self.every is not None:
            return schedule(dt.timedelta(seconds=self.every))
        minute, hour, day_of_month, month_of_year, day_of_week = (self.cron or "").split()
        return crontab(minute, hour, day_of_week, day_of_month, month_of_year)


def entries(settings: Settings) -> dict[str, Entry]:
    """The schedule in force: the default entry, then the file's, then the variable's (later wins)."""
    merged: dict[str, Any] = {
        "generate-report": {"task": "generate_report_task", "cron": settings.report_schedule}
    }
    if settings.schedule_file:
        merged.update(json.loads(Path(settings.schedule_file).read_text()))
    if settings.schedule:
        merged.update(json.loads(settings.schedule))
    return {name: Entry.model_validate(entry) for name, entry in merged.items()}


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """The schedule as Celery's ``beat_schedule`` setting."""
    return {
        name: {
            "task": entry.task,
            "schedule": entry.celery_schedule(),
            "args": entry.args,
            "kwargs": entry.kwargs,
        }
        for name, entry in entries(settings).items()
    }


def describe(app: Celery, now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """Each entry of ``app``'s ``beat_schedule`` with its next run time (as if it last ran now, for
    interval entries): ``cron`` for a crontab, ``every`` (seconds) for an interval."""
    now = now or dt.datetime.now(dt.UTC)
    described = []
    for name, entry in (app.conf.beat_schedule or {}).items():
        timing = maybe_schedule(entry.get("schedule"), app=app)
        timing.nowfun = lambda: now
        next_run = now + timing.remaining_estimate(now)
        described.append(
            {
                "name": name,
                "task": entry.get("task"),
                "cron": _cron_of(timing),
                "every": timing.run_every.total_seconds() if type(timing) is schedule else None,
                "args": list(entry.get("args") or ()),
                "kwargs": dict(entry.get("kwargs") or {}),
                "next_run_at": next_run.isoformat(),
            }
        )
    return described


def _cron_of(timing: Any) -> str | None:
    """A crontab's five fields as it was written, or None for another kind of schedule."""
    if not isinstance(timing, crontab):
        return None
    fields = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")
    return " ".join(str(getattr(timing, f"_orig_{field}")) for field in fields)
