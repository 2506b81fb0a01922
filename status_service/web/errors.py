"""Every error as JSON in one envelope: {"status": "error", "error": {"code", "message"}}."""
from __future__ import annotations

import logging
import re

from flask import Flask, Response, json
from werkzeug.exceptions import HTTPException

from ..store import StoreUnavailable
from .auth import AuthError

log = logging.getLogger("status_service.web")

RETRY_AFTER_S = 5
AUTH_CHALLENGES = ('Bearer realm="status"', 'Basic realm="status", charset="UTF-8"')  # Basic: a browser's login dialog


def error_response(status: int, code: str, message: str, **extra: object) -> Response:
    """Return a JSON error in the envelope every endpoint uses."""
    body = {"status": "error", "error": {"code": code, "message": message}, **extra}
    return Response(json.dumps(body), status=status, mimetype="application/json")


def register(app: Flask) -> None:
    """Install the handlers that turn every failure into the JSON envelope."""

    @app.errorhandler(AuthError)
    def unauthorized(exc: AuthError) -> Response:
        response = error_response(401, "unauthorized", exc.message)
        for challenge in AUTH_CHALLENGES:
            response.headers.add("WWW-Authenticate", challenge)
        return response

    @app.errorhandler(StoreUnavailable)
    def unavailable(exc: StoreUnavailable) -> Response:
        # Not logged here: the worker's Link logs once when Redis goes away and once when it is back.
        response = error_response(503, "unavailable", "status data is temporarily unavailable; retry shortly")
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
        return response

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        code = re.sub(r"[^a-z0-9]+", "_", (exc.name or "error").lower()).strip("_")
        response = error_response(exc.code or 500, code, exc.description or exc.name or "error")
        allowed = getattr(exc, "valid_methods", None)
        if allowed:
            response.headers["Allow"] = ", ".join(allowed)
        return response

    @app.errorhandler(Exception)
    def internal(exc: Exception) -> Response:
        log.exception("request.failed error=%s", exc.__class__.__name__)
        return error_response(500, "internal_error", "an unexpected error occurred")
