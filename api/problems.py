"""Errors as problem+json (RFC 9457): every error answer of the API has this shape."""

from __future__ import annotations

from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match

from api.schemas import KINDS

MEDIA_TYPE = "application/problem+json"


class ApiError(Exception):
    def __init__(self, status: int, title: str, detail: str, headers: dict[str, str] | None = None, **extra):
        super().__init__(detail)
        self.status, self.title, self.detail, self.headers, self.extra = status, title, detail, headers, extra


PROBLEM_SCHEMA = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string", "description": "what went wrong, in words a person can act on"},
        "instance": {"type": "string"},
    },
}


def responses(*statuses: int) -> dict:
    """OpenAPI `responses` for the error answers a route may give, each as problem+json."""
    return {
        s: {"description": HTTPStatus(s).phrase, "content": {MEDIA_TYPE: {"schema": PROBLEM_SCHEMA}}} for s in statuses
    }


def problem(status: int, detail: str, title: str | None = None, headers=None, instance: str | None = None, **extra):
    body = {"type": "about:blank", "title": title or HTTPStatus(status).phrase, "status": status, "detail": detail}
    if instance:
        body["instance"] = instance
    return JSONResponse({**body, **extra}, status_code=status, headers=headers, media_type=MEDIA_TYPE)


def _location(loc) -> str:
    """("body", "batch", "items", 3, "generate", "seconds") → "items[3].seconds": without the body and the kind tags
    of the JobBody unions (a tag follows the body or a list index), list indices in brackets."""
    text, previous = "", "body"
    for part in loc:
        if part == "body" or (part in KINDS and (previous == "body" or isinstance(previous, int))):
            pass
        elif isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
        previous = part
    return text or "body"


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves on this path (Starlette's own 405 names only the first route's)."""
    methods = set()
    for route in request.app.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match != Match.NONE and getattr(route, "methods", None):
            methods |= route.methods
    return sorted(methods)


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError):
        return problem(e.status, e.detail, e.title, e.headers, request.url.path, **e.extra)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException):
        detail = e.detail if isinstance(e.detail, str) else HTTPStatus(e.status_code).description
        if e.status_code == 404 and detail == "Not Found":
            detail = f"no route {request.url.path}"
        headers = getattr(e, "headers", None)
        if e.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path}"
            headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(request))}
        return problem(e.status_code, detail, headers=headers, instance=request.url.path)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError):
        errors = [{"loc": _location(err["loc"]), "msg": err["msg"]} for err in e.errors()]
        detail = "; ".join(f"{err['loc']}: {err['msg']}" for err in errors)
        return problem(422, detail, "Unprocessable Content", instance=request.url.path, errors=errors)

    @app.exception_handler(Exception)
    async def internal(request: Request, e: Exception):
        return problem(500, "an internal error; it has been logged", instance=request.url.path)
