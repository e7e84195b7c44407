"""/metrics: Prometheus' text format, when METRICS_ENABLED (optionally behind METRICS_TOKEN)."""

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from todoapp import metrics

router = APIRouter(tags=["operations"])


# Not in the OpenAPI document: it is for the monitoring system, not part of the API.
# Plain `def`: with several workers it reads their files (see metrics.exposition).
@router.get("/metrics", include_in_schema=False)
def read_metrics(request: Request) -> Response:
    token = request.app.state.settings.metrics_token
    if token is not None and not metrics.token_matches(request.headers.get("authorization"), token):
        return JSONResponse(
            {"detail": "Not authenticated"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    return Response(metrics.exposition(), media_type=metrics.CONTENT_TYPE)
