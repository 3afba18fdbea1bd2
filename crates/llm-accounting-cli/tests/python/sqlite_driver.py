"""Drives the Python llm-accounting package (0.1.34) on a SQLite file for the interop tests.

Usage: python sqlite_driver.py DB COMMAND [ARGS...]; prints one JSON document.
Each run is a fresh process: the package caches limits and denials per instance.
"""
import json
import sys
from datetime import datetime, timedelta, timezone

from llm_accounting import LLMAccounting
from llm_accounting.backends.sqlite import SQLiteBackend
from llm_accounting.models.limits import LimitScope, LimitType, TimeInterval

import parity as parity_setup



def parity(acc):
    """The package's answers to the calls of `parity.CALLS` after `parity.setup`."""
    from llm_accounting.services.quota_service_parts._limit_evaluator import (
        QuotaServiceLimitEvaluator)
    evaluator = QuotaServiceLimitEvaluator(acc.backend)

    def add_limit(scope, limit_type, max_value, unit, n, **fields):
        acc.set_usage_limit(LimitScope(scope), LimitType(limit_type), max_value,
                            TimeInterval(unit), n, **fields)

    def add_entry(**fields):
        acc.track_usage(**fields)

    def count(start, end, model):
        return evaluator.backend.get_accounting_entries_for_quota(
            start_time=start, end_time=end, limit_type=LimitType.REQUESTS,
            interval_unit=TimeInterval.MINUTE, model=model)

    m7 = parity_setup.setup(add_limit, add_entry, count)
    answers = []
    for model, user, project, tokens in parity_setup.CALLS:
        allowed, reason = acc.check_quota(model=model, username=user, caller_name=None,
                                          input_tokens=tokens, cost=0.0, project_name=project)
        answers.append({"model": model, "user": user, "project": project,
                        "input_tokens": tokens, "allowed": allowed, "reason": reason})
    print(json.dumps({"m7_usage": m7, "calls": answers}))

db, command, args = sys.argv[1], sys.argv[2], sys.argv[3:]
with LLMAccounting(backend=SQLiteBackend(db_path=db)) as acc:
    if command == "init":
        # A limit of 3 requests a day for alice, and two calls of hers.
        acc.set_usage_limit(LimitScope.USER, LimitType.REQUESTS, 3, TimeInterval.DAY, 1,
                            username="alice")
        for _ in range(2):
            acc.track_usage(model="gpt-4", prompt_tokens=10, completion_tokens=5, cost=0.0125,
                            execution_time=0.5, caller_name="app", username="alice",
                            project="p1")
        print(json.dumps({"ok": True}))
    elif command == "check":
        allowed, reason = acc.check_quota(model="gpt-4", username=args[0], caller_name="app",
                                          input_tokens=10)
        print(json.dumps({"allowed": allowed, "reason": reason}))
    elif command == "stats":
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        s = acc.get_period_stats(now - timedelta(days=1), now + timedelta(days=1))
        print(json.dumps({"sum_cost": s.sum_cost, "sum_prompt_tokens": s.sum_prompt_tokens,
                          "sum_completion_tokens": s.sum_completion_tokens}))
    elif command == "limits":
        print(json.dumps([{"scope": l.scope, "limit_type": l.limit_type,
                           "max_value": l.max_value, "model": l.model,
                           "interval_unit": l.interval_unit}
                          for l in acc.get_usage_limits()]))
    elif command == "track":
        # N calls of MODEL, tracked without a quota check (as an application that only
        # records would).
        for _ in range(int(args[0])):
            acc.track_usage(model=args[1], prompt_tokens=1, completion_tokens=1, cost=0.001,
                            execution_time=0.1, caller_name="py", username="carol")
        print(json.dumps({"ok": True}))
    elif command == "huge":
        # An entry past every maximum this project accepts (another program wrote it).
        acc.track_usage(model="gpt-4", prompt_tokens=9223372036854775807,
                        completion_tokens=9223372036854775807, cost=1e300,
                        execution_time=0.1, caller_name="py", username="mallory")
        print(json.dumps({"ok": True}))
    elif command == "count":
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        entries = acc.backend.get_accounting_entries_for_quota(
            start_time=now - timedelta(days=1), end_time=now + timedelta(days=1),
            limit_type=LimitType.REQUESTS, interval_unit=TimeInterval.DAY, model=None)
        print(json.dumps({"requests": entries}))
    elif command == "parity":
        parity(acc)
    else:
        sys.exit(f"unknown command {command}")
