"""Drives the Python llm-accounting package (0.1.34) on PostgreSQL for the interop tests.

Usage: python pg_driver.py URL COMMAND; prints one JSON document. URL is postgresql://...

The package's PostgreSQL backend is broken in 0.1.34 (its ConnectionManager has no `conn`;
its queries name a column `model_name` its own schema lacks), so only what works is used:
`initialize()` (creates the schema and stamps the alembic head), the package's own SQLAlchemy
models for writing rows as the package defines them, and `get_period_stats`.
"""
import json
import sys
from datetime import datetime, timedelta, timezone

from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from llm_accounting.backends.postgresql import PostgreSQLBackend
from llm_accounting.backends.postgresql_backend_parts.connection_manager import ConnectionManager
from llm_accounting.models import AccountingEntry, UsageLimit

import parity

ConnectionManager.conn = property(lambda s: s.backend.conn)

url, command = sys.argv[1], sys.argv[2]
now = datetime.now(timezone.utc).replace(tzinfo=None)
if command == "init":
    backend = PostgreSQLBackend(url)
    backend.initialize()
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg2://", 1))
    with Session(engine) as session:
        session.add(UsageLimit(scope="USER", limit_type="requests", max_value=3.0,
                               interval_unit="day", interval_value=1, username="alice",
                               created_at=now, updated_at=now))
        for _ in range(2):
            session.add(AccountingEntry(model="gpt-4", prompt_tokens=10, completion_tokens=5,
                                        total_tokens=15, cost=0.0125, execution_time=0.5,
                                        caller_name="app", username="alice", project="p1",
                                        cached_tokens=0, reasoning_tokens=0, timestamp=now))
        session.commit()
    print(json.dumps({"ok": True}))
elif command == "stats":
    backend = PostgreSQLBackend(url)
    backend.initialize()
    s = backend.get_period_stats(now - timedelta(days=1), now + timedelta(days=1))
    print(json.dumps({"sum_cost": s.sum_cost, "sum_prompt_tokens": s.sum_prompt_tokens}))
elif command == "parity":
    # The limits and entries of parity.py, written through the package's models; the
    # package's answers come from the SQLite driver (its PostgreSQL backend cannot check).
    backend = PostgreSQLBackend(url)
    backend.initialize()
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg2://", 1))
    with Session(engine) as session:
        def add_limit(scope, limit_type, max_value, unit, n, **columns):
            session.add(UsageLimit(scope=scope, limit_type=limit_type, max_value=max_value,
                                   interval_unit=unit, interval_value=n, created_at=now,
                                   updated_at=now, **columns))
            session.flush()

        def add_entry(model, username, timestamp, project=None, prompt_tokens=0):
            session.add(AccountingEntry(model=model, prompt_tokens=prompt_tokens,
                                        completion_tokens=0, total_tokens=prompt_tokens,
                                        cost=0.0, execution_time=0.0, caller_name=None,
                                        username=username, project=project, cached_tokens=0,
                                        reasoning_tokens=0, timestamp=timestamp))

        def count(start, end, model):
            session.flush()
            return session.execute(text(
                "SELECT COUNT(*) FROM accounting_entries WHERE timestamp >= :s "
                "AND timestamp <= :e AND model = :m"), {"s": start, "e": end, "m": model}).scalar()

        m7 = parity.setup(add_limit, add_entry, count)
        session.commit()
    print(json.dumps({"m7_usage": m7}))
else:
    sys.exit(f"unknown command {command}")
