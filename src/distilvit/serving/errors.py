"""Every error the API returns is JSON ``{"error": code, "message": what was wrong and what to do}``.

Errors raised by FastAPI/Starlette themselves (body over the size limit, unparsable multipart, missing
``images`` field, unknown path) are rewritten into the same shape with a message that says what to do.
Under ``/v1/`` (the OpenAI-compatible routes, :mod:`distilvit.serving.openai_api`) the same code and message
come in OpenAI's shape instead (:func:`error_body`).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from distilvit.serving.limits import APIError, ServeLimits

logger = logging.getLogger("distilvit.serving")

HOW_TO_SEND = "send multipart/form-data with one or more image files in the field 'images' (curl -F images=@photo.jpg)"


class ErrorBody(BaseModel):
    error: str
    message: str


ERROR_RESPONSES = {
    400: {"model": ErrorBody, "description": "undecodable image or malformed multipart body"},
    413: {"model": ErrorBody, "description": "request body, image pixels or image count over the limit"},
    415: {"model": ErrorBody, "description": "an upload (or the request) is not an image / not multipart"},
    422: {"model": ErrorBody, "description": "no files in the field 'images'"},
    503: {"model": ErrorBody, "description": "too many images waiting; retry later"},
    504: {"model": ErrorBody, "description": "captions not ready within the request timeout"},
}

_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}

#: Every ``error`` code the API answers with, and its HTTP status (``None``: the status of the web framework's
#: own error). README.md's error table lists exactly these (tests/test_serving_error_codes.py keeps the two,
#: and the codes raised in ``distilvit.serving``, in step).
ERROR_CODES: dict[str, int | None] = {
    "request_too_large": 413, "image_too_large": 413, "too_many_images": 413,
    "unsupported_media_type": 415, "undecodable_image": 400, "empty_image": 400, "bad_request": 400,
    "invalid_request": 422, "not_found": 404, "method_not_allowed": 405, "http_error": None,
    "timeout": 504, "overloaded": 503, "internal_error": 500,
    # POST /v1/chat/completions only (serving/openai_api.py, serving/data_urls.py)
    "invalid_chat_request": 400, "image_url_not_allowed": 400, "invalid_data_url": 400, "chat_not_supported": 501,
}


#: Paths whose errors take OpenAI's shape (the routes of serving/openai_api.py).
OPENAI_PREFIX = "/v1/"


def error_body(path: str, status: int, code: str, message: str) -> dict:
    """``{"error": code, "message": message}``, or under :data:`OPENAI_PREFIX` OpenAI's
    ``{"error": {"message", "type", "code", "param"}}``, which the ``openai`` client reads: it raises
    ``APIStatusError`` (``BadRequestError`` for 400, ...) with ``.code`` = ``code`` and ``message`` in its text.
    (The flat shape would reach that client as a bare "Error code: 400" with the message lost.)"""
    if path.startswith(OPENAI_PREFIX):
        kind = "invalid_request_error" if status < 500 else "server_error"
        return {"error": {"message": message, "type": kind, "code": code, "param": None}}
    return {"error": code, "message": message}


def _json(status: int, code: str, message: str, path: str = "/") -> JSONResponse:
    return JSONResponse(error_body(path, status, code, message), status_code=status)


def _http_message(status: int, detail: str, limits: ServeLimits) -> str:
    if status == 413:
        return (f"the request body is larger than the limit of {limits.max_upload_bytes:,} bytes "
                "(server option --max-upload-mb); send fewer or smaller images per request.")
    if status == 400:
        return f"cannot parse the request body ({detail}); {HOW_TO_SEND}."
    if status == 404:
        return ("no such endpoint; the API has POST /caption, GET /health, POST /v1/chat/completions and "
                "GET /v1/models (documentation at /docs).")
    if status == 405:
        return ("method not allowed here; use POST /caption (multipart image upload), GET /health, "
                "POST /v1/chat/completions or GET /v1/models.")
    return str(detail)


class DeclaredSizeLimit:
    """ASGI middleware: a request whose ``Content-Length`` is over ``limits.max_upload_bytes`` gets the JSON 413
    at once, unread. (The route's own ``max_body_size`` check, which also catches chunked bodies, answers such
    requests in plain text.)"""

    def __init__(self, app: ASGIApp, limits: ServeLimits):
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            declared = Headers(scope=scope).get("content-length", "")
            if declared.isdigit() and int(declared) > self.limits.max_upload_bytes:
                message = _http_message(413, "", self.limits)
                await _json(413, "request_too_large", message, scope.get("path", "/"))(scope, receive, send)
                return
        await self.app(scope, receive, send)


def install_error_handlers(app: FastAPI, limits: ServeLimits) -> None:
    """Register the JSON error handlers (and the declared-size check) on ``app``."""
    app.add_middleware(DeclaredSizeLimit, limits=limits)

    @app.exception_handler(APIError)
    async def api_error(request: Request, err: APIError) -> JSONResponse:
        body = error_body(request.url.path, err.status, err.code, err.message)
        return JSONResponse(body, status_code=err.status, headers=err.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        code = _CODES.get(err.status_code, "http_error")
        message = _http_message(err.status_code, str(err.detail), limits)
        response = _json(err.status_code, code, message, request.url.path)
        if err.headers:
            response.headers.update(err.headers)
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in err.errors())
        return _json(422, "invalid_request", f"{HOW_TO_SEND} ({problems}). URLs are not fetched.", request.url.path)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, err: Exception) -> JSONResponse:
        logger.exception("internal error while serving a request")
        return _json(500, "internal_error", f"the server failed ({type(err).__name__}); this is a bug, "
                     "please report it with the server log.", request.url.path)
