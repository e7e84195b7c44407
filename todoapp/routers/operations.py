"""/healthz and /readyz."""

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

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
def ready(request: Request) -> ReadyOut | JSONResponse:
    if request.app.state.drain.draining:  # see drain.py: the balancer takes us out
        return JSONResponse({"detail": DRAINING}, status_code=503)
    database = request.app.state.database
    try:
        problem = database.schema_problem()
    except SQLAlchemyError:
        problem = "database unavailable"
    if problem is not None:
        return JSONResponse({"detail": problem}, status_code=503)
    return ReadyOut(status="ok", database="ok", migrations=database.head)
