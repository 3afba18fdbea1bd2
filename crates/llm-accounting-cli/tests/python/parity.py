"""Limits and usage that exercise the Python llm-accounting package's quota rules, shared by
the SQLite and PostgreSQL drivers, and the calls to ask about.

The rules: limits are checked from the most specific (fewest of model, username,
caller_name, project_name unset) to the least, ties in id order, and one with
max_value = -1 allows the call outright; a PROJECT limit without a project name is for calls
without a project and counts only their usage; monthly_rolling starts on the first of an
earlier month; minute windows start at each hour.
"""
import time
from datetime import datetime, timedelta, timezone

from llm_accounting.models.limits import TimeInterval
from llm_accounting.services.quota_service_parts._limit_evaluator import (
    QuotaServiceLimitEvaluator)

# (model, username, project, input tokens)
CALLS = [
    ("gpt-4", "alice", None, 0),
    ("gpt-4", "alice", "p1", 100),
    ("gpt-4", "bob", "px", 0),
    ("gpt-4", "erin", "px", 0),
    ("gpt-4", "frank", "px", 0),
    ("g2", "bob", None, 0),
    ("g2", "bob", "p9", 0),
    ("g3", "carol", "p1", 10),
    ("g3", "carol", "p1", 5),
    ("g3", "carol", "p2", 10),
    ("m7", "dave", "p7", 0),
    ("m7", "dave", "p8", 0),
]


def _naive(t):
    return t.astimezone(timezone.utc).replace(tzinfo=None)


def setup(add_limit, add_entry, count):
    """Writes the limits and entries; returns the m7 usage the package counts now.

    add_limit(scope, limit_type, max_value, interval_unit, interval_value, **columns),
    add_entry(**track_usage arguments), count(start, end, model) -> requests in [start, end].
    """
    period_start = lambda t: QuotaServiceLimitEvaluator._get_period_start(
        None, t, TimeInterval.MINUTE, 7)
    # Stay clear of a seven-minute window's end: the Rust side checks after this process.
    now = datetime.now(timezone.utc)
    start = period_start(now)
    end = min(start + timedelta(minutes=7), start.replace(minute=0) + timedelta(hours=1))
    if (end - now).total_seconds() < 30:
        time.sleep((end - now).total_seconds() + 1)
        now = datetime.now(timezone.utc)

    # An exemption set before the model limit, which wins the tie on specificity.
    add_limit("USER", "requests", -1, "day", 1, username="frank")
    add_limit("MODEL", "requests", 2, "day", 1, model="gpt-4")
    # More specific than the model limit and p1's project limit: exempts alice on gpt-4.
    add_limit("USER", "requests", -1, "day", 1, username="alice", model="gpt-4")
    # As specific as the model limit but set after it: exempts erin from nothing.
    add_limit("USER", "requests", -1, "day", 1, username="erin")
    # For calls without a project.
    add_limit("PROJECT", "requests", 2, "day", 1)
    add_limit("PROJECT", "input_tokens", 25, "monthly_rolling", 1, project_name="p1")

    for _ in range(2):
        add_entry(model="gpt-4", username="bob", project="px", timestamp=_naive(now))
        add_entry(model="g2", username="bob", timestamp=_naive(now))
    # Inside the package's monthly_rolling window (from the first of last month), though
    # more than 31 days ago on most days.
    first_of_last_month = (now.replace(day=1, hour=0, minute=0, second=30, microsecond=0)
                           - timedelta(days=1)).replace(day=1)
    add_entry(model="g3", username="carol", project="p1", prompt_tokens=20,
              timestamp=_naive(first_of_last_month))
    # A call a minute for the last half hour; the limit allows exactly what the package
    # counts in its current seven-minute window, so a count that differs changes the answer.
    for minutes in range(1, 31):
        add_entry(model="m7", username="dave", project="p7",
                  timestamp=_naive(now - timedelta(minutes=minutes, seconds=1)))
    m7 = int(count(_naive(period_start(now)), _naive(now), "m7"))
    add_limit("MODEL", "requests", m7, "minute", 7, model="m7")
    return m7
