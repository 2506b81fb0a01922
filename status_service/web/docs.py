"""The API's own description: GET /openapi.json, and GET /docs, a plain HTML reference made from it."""
from __future__ import annotations

import json
import threading
from typing import Any

from flask import Blueprint, Response, current_app, render_template

from .. import openapi
from .page import POLICY

bp = Blueprint("docs", __name__)
_building = threading.Lock()
METHOD_ORDER = ("get", "put", "post", "delete")


def _document() -> dict[str, Any]:
    """Return the app's document, built once on first use (the routes are all known by then)."""
    found = current_app.extensions.get("status_openapi")
    if found is None:
        with _building:
            found = current_app.extensions.get("status_openapi")
            if found is None:
                found = current_app.extensions["status_openapi"] = openapi.build(current_app)
    return found


@bp.get("/openapi.json")
def document() -> Response:
    """Return the OpenAPI 3.1 document of this service: public, it holds no tenant data."""
    response = Response(json.dumps(_document(), indent=1), mimetype="application/json")
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


@bp.get("/docs")
def reference() -> Response:
    """Return a plain HTML reference of the API, made from its OpenAPI document; no script, no CDN."""
    doc = _document()
    sections = []
    for tag in doc["tags"]:
        operations = []
        for path, methods in doc["paths"].items():
            for method in sorted(methods, key=METHOD_ORDER.index):
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
    html = render_template("docs.html", doc=doc, sections=sections, schemes=doc["components"]["securitySchemes"])
    response = Response(html, mimetype="text/html")
    response.headers["Content-Security-Policy"] = POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "public, max-age=300"
    return response
