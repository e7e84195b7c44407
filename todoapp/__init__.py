"""todoapp: a synchronous todo-and-users REST backend (FastAPI, SQLAlchemy 2, Alembic)."""
