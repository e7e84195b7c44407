"""The learner's door: `uvicorn main:app --reload` (or `fastapi dev main.py`) from here.

The application itself is built in todoapp/main.py; this file only makes it importable
under the short name that tutorials type.
"""

from todoapp.main import app

__all__ = ["app"]
