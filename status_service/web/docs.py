"""The API's own description: GET /openapi.json, and GET /docs, a plain HTML reference made from it."""
from __future__ import annotations

import hashlib
import json
import threading
from typing import Any, Callable

from flask import Blueprint, Response, current_app, render_template, request

from .. import openapi
from .page import POLICY

bp = Blueprint("docs", __name__)
_building = threading.RLock()  # re-entered: the page and the bytes are made from the document
METHOD_ORDER = {"get": 0, "put": 1, "post": 2, "patch": 3, "delete": 4}


def _made(name: str, make: Callable[[], Any]) -> Any:
    """Return what `make` returns, made once per app: the routes are all known by the first request, and never change."""
    found = current_app.extensions.get(name)
    if found is None:
        with _building:
            found = current_app.extensions.get(name)
            if found is None:
                found = current_app.extensions[name] = make()
    return found


def _document() -> dict[str, Any]:
    return _made("status_openapi", lambda: openapi.build(current_app))


def _answer(body: bytes, mimetype: str) -> Response:
    """Return a public, cacheable answer with a tag, 304 for a client that holds it."""
    response = Response(body, mimetype=mimetype)
    response.headers["Cache-Control"] = "public, max-age=300"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.set_etag(hashlib.sha256(body).hexdigest()[:32])
    return response.make_conditional(request)


@bp.get("/openapi.json")
def document() -> Response:
    """Return the OpenAPI 3.1 document of this service: public, it holds no tenant data."""
    return _answer(_made("status_openapi_bytes", lambda: json.dumps(_document(), indent=1).encode()), "application/json")


@bp.get("/docs")
def reference() -> Response:
    """Return a plain HTML reference of the API, made from its OpenAPI document; no script, no CDN."""
    response = _answer(_made("status_docs_html", _render), "text/html")
    response.headers["Content-Security-Policy"] = POLICY
    return response


def _render() -> bytes:
    """Return the reference page: each tag's operations with their parameters, body fields and answers."""
    doc = _document()
    sections = []
    for tag in doc["tags"]:
        operations = []
        for path, methods in doc["paths"].items():
            for method in sorted(methods, key=lambda m: METHOD_ORDER.get(m, len(METHOD_ORDER))):
                op = methods[method]
                if tag["name"] not in op["tags"]:
                    continue
                body = op.get("requestBody", {}).get("content", {}).get(openapi.JSON, {}).get("schema")
                answers = [(code, answer["description"], [(media, openapi.fields_of(content["schema"], doc))
                                                           for media, content in answer.get("content", {}).items()])
                           for code, answer in op["responses"].items()]
                operations.append({"method": method.upper(), "path": path, "op": op, "answers": answers,
                                   "body": openapi.fields_of(body, doc) if body else None,
                                   "body_required": op.get("requestBody", {}).get("required", False),
                                   "security": sorted({name for option in op["security"] for name in option})})
        sections.append({"tag": tag, "operations": operations})
    return render_template("docs.html", doc=doc, sections=sections, schemes=doc["components"]["securitySchemes"]).encode()
