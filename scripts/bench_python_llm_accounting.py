"""Per-call times of the Python llm-accounting package (0.1.34) on SQLite, for comparison with
this project's figures (README, "Figures"). Run by scripts/bench-python-llm-accounting.

Measures: track_usage with one limit set (3 x N entries tracked); check_quota with that
limit, on those entries; check_quota with 100 limits of which 10 apply (the shape of this
project's strict reserve benchmark), on N entries. Prints one line per measure: median of 3
runs of N calls.
"""
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from llm_accounting import LLMAccounting
from llm_accounting.backends.sqlite import SQLiteBackend
from llm_accounting.models.limits import LimitScope, LimitType, TimeInterval

N = int(sys.argv[1]) if len(sys.argv) > 1 else 2000


def fresh(directory, name, limits):
    acc = LLMAccounting(backend=SQLiteBackend(db_path=str(Path(directory) / name)))
    acc.__enter__()
    for i in range(limits):
        user = "alice" if i < max(1, limits // 10) else f"user{i}"
        acc.set_usage_limit(LimitScope.USER, LimitType.REQUESTS, 1e9, TimeInterval.DAY, 1,
                            username=user, model=None if i < 10 else f"m{i}")
    return acc


def per_call_ms(fn):
    runs = []
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(N):
            fn()
        runs.append((time.perf_counter() - start) * 1000 / N)
    return statistics.median(runs)


with tempfile.TemporaryDirectory() as d:
    # The package writes a cache file under its working directory: keep it in the temporary one.
    os.chdir(d)
    acc = fresh(d, "track.db", 1)
    ms = per_call_ms(lambda: acc.track_usage(model="gpt-4o", username="alice",
                                             prompt_tokens=10, completion_tokens=5,
                                             cost=0.0125))
    print(f"python track_usage, 1 limit: {ms:.3f} ms per call ({N} calls, median of 3)")
    ms = per_call_ms(lambda: acc.check_quota(model="gpt-4o", username="alice",
                                             caller_name=None, input_tokens=10, cost=0.0))
    print(f"python check_quota, 1 limit, {3 * N} entries: {ms:.3f} ms per call "
          f"({N} calls, median of 3)")
    acc = fresh(d, "check100.db", 100)
    for _ in range(N):
        acc.track_usage(model="gpt-4o", username="alice", prompt_tokens=10, cost=0.0125)
    ms = per_call_ms(lambda: acc.check_quota(model="gpt-4o", username="alice",
                                             caller_name=None, input_tokens=10, cost=0.0))
    print(f"python check_quota, 100 limits (10 apply), {N} entries: {ms:.3f} ms per call "
          f"({N} calls, median of 3)")
