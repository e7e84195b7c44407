"""Alembic's entry point: the URL comes from todoapp's Settings, never from alembic.ini."""

import warnings
from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection, create_engine, pool

from todoapp import models  # noqa: F401  (registers the tables on Base.metadata)
from todoapp.config import get_settings
from todoapp.database import Base, database_url

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata

# SQLite cannot reflect the lower(...) unique indexes, so autogenerate skips them
# there; PostgreSQL compares them.
warnings.filterwarnings("ignore", message=".*expression-based index.*")


def _include_object(
    item: object, _name: str | None, type_: str, _reflected: bool, _compare_to: object
) -> bool:
    """Leave out of the comparison what a model marks as another database's only (the
    trigram indexes exist on PostgreSQL alone)."""
    only_on = getattr(item, "info", {}).get("only_on") if type_ == "index" else None
    return only_on is None or only_on == context.get_context().dialect.name


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        include_object=_include_object,
        compare_type=True,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        transaction_per_migration=True,
    )


def _database_url() -> str:
    # Tests and tools may hand over a URL programmatically; otherwise DATABASE_URL.
    url = config.attributes.get("database_url") or get_settings().database_url
    return database_url(url).render_as_string(hide_password=False)


def run_migrations_offline() -> None:
    context.configure(
        url=_database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    # A plain engine: no foreign-key PRAGMA, since batch mode on SQLite drops and
    # recreates tables that other tables refer to.
    engine = create_engine(_database_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
