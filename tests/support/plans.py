"""Query plans on either database: does a statement seek the account index?"""

from __future__ import annotations

from typing import Any

ACCOUNT_INDEX = "ix_generations_account_state_created"
SQLITE_SEEK = "account_id=? AND state=? AND created_at>? AND created_at<?"


def seeks_account_index(store: Any, statement: str, parameters: Any) -> tuple[bool, str]:
    """Whether the database would answer `statement` (as sent to the driver, with its parameters)
    by seeking the account index on account, state and a created_at range; and the plan.

    PostgreSQL plans a handful of rows as a sequential scan whatever the indexes, so sequential
    scans are switched off for the question: it then answers which index it would read, and on
    what. It reads one account's entries and checks created_at in the index; with every state
    listed it may check the states there too rather than seek each (no skip scan before 18)."""
    with store.db.read() as conn:
        if store.db.is_sqlite:
            rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
            plan = " ".join(str(row[-1]) for row in rows)
            return f"INDEX {ACCOUNT_INDEX} ({SQLITE_SEEK})" in plan, plan
        conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        lines = [str(row[0]) for row in conn.exec_driver_sql(f"EXPLAIN {statement}", parameters)]
    plan = "\n".join(lines)
    for at, line in enumerate(lines):
        if f"using {ACCOUNT_INDEX} " in line:
            condition = next((n for n in lines[at + 1 :] if "Index Cond:" in n), "")
            columns = ("account_id", "created_at >", "created_at <")
            return all(column in condition for column in columns), plan
    return False, plan
