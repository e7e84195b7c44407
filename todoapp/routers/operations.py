"""/healthz and /readyz."""

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from todoapp.database import Database
from todoapp.drain import DRAINING
from todoapp.schemas import ErrorOut, HealthOut, ReadyOut

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="The process is serving", operation_id="operations-health")
async def health() -> HealthOut:
    return HealthOut(status="ok")


@router.get(
    "/readyz",
    summary="The database answers and is at the head revision",
    operation_id="operations-ready",
    response_model=ReadyOut,
    responses={503: {"model": ErrorOut, "description": "Not ready; `detail` says why"}},
)
async def ready(request: Request) -> ReadyOut | JSONResponse:
    # A draining worker says so at once, without waiting for a thread (see drain.py:
    # the balancer takes it out); the database is asked from a thread.
    if request.app.state.drain.draining:
        return JSONResponse({"detail": DRAINING}, status_code=503)
    database = request.app.state.database
    problem = await run_in_threadpool(_schema_problem, database)
    if problem is not None:
        return JSONResponse({"detail": problem}, status_code=503)
    return ReadyOut(status="ok", database="ok", migrations=database.head)


def _schema_problem(database: Database) -> str | None:
    try:
        return database.schema_problem()
    except SQLAlchemyError:
        return "database unavailable"
