"""Raw DDL (triggers, functions, seed rows) that ``db.create_all()`` runs with a table, per dialect."""

from __future__ import annotations

from sqlalchemy import DDL, Table, event


def attach_ddl(table: Table, when: str, statements_by_dialect: dict[str, list[str]]) -> None:
    """Run each dialect's statements, in order, on that dialect only, ``when`` (``after_create``…) for ``table``."""
    for dialect, statements in statements_by_dialect.items():
        for statement in statements:
            event.listen(table, when, DDL(statement).execute_if(dialect=dialect))
