"""schema.sql is the head schema: applied to an empty PostgreSQL database it equals the
one `alembic upgrade head` builds, in every table, column, index and constraint."""

from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import ROOT, create_pg_database, drop_pg_database, migrate
from todoapp.database import database_url

pytestmark = pytest.mark.postgres_only

CATALOG_QUERIES = {
    "columns": """
        SELECT table_name, column_name, data_type, character_maximum_length,
               is_nullable, column_default
        FROM information_schema.columns WHERE table_schema = 'public'
          AND table_name <> 'alembic_version'
        ORDER BY table_name, column_name""",
    "indexes": """
        SELECT tablename, indexname, indexdef FROM pg_indexes
        WHERE schemaname = 'public' AND tablename <> 'alembic_version'
        ORDER BY tablename, indexname""",
    "constraints": """
        SELECT conrelid::regclass::text, conname, contype, pg_get_constraintdef(oid)
        FROM pg_constraint WHERE connamespace = 'public'::regnamespace
          AND conrelid::regclass::text <> 'alembic_version'
        ORDER BY 1, 2""",
    "triggers": """
        SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid) FROM pg_trigger
        WHERE NOT tgisinternal ORDER BY 1, 2""",
    "functions": """
        SELECT proname, pg_get_function_identity_arguments(oid), prosrc FROM pg_proc
        WHERE pronamespace = 'public'::regnamespace ORDER BY 1, 2""",
}


def _catalog(url: str) -> dict[str, list[tuple[Any, ...]]]:
    engine = create_engine(database_url(url))
    try:
        with engine.connect() as connection:
            return {
                name: [tuple(row) for row in connection.execute(text(query))]
                for name, query in CATALOG_QUERIES.items()
            }
    finally:
        engine.dispose()


def test_schema_sql_equals_the_migrated_schema(pg_server: str) -> None:
    migrated, plain = create_pg_database(pg_server), create_pg_database(pg_server)
    try:
        migrate(migrated)
        engine = create_engine(database_url(plain))
        with engine.begin() as connection:
            connection.exec_driver_sql((ROOT / "schema.sql").read_text())
        engine.dispose()
        from_alembic, from_sql = _catalog(migrated), _catalog(plain)
        assert from_alembic["columns"], "the migrated database has no columns"
        for part in CATALOG_QUERIES:
            assert from_sql[part] == from_alembic[part], part
    finally:
        drop_pg_database(pg_server, migrated)
        drop_pg_database(pg_server, plain)
