"""The OpenAPI document as a contract: every answer a test gets is checked against it.

conftest.py makes every Flask test client of the suite a CheckedClient, so each response any test
receives, on any route, must be one the document describes: a documented status for that route and
method, a documented media type, and a body that validates against the documented schema, held
closed (a field the document does not list fails). 405 and 500 go to the document's `default` answer.
"""
from __future__ import annotations

import copy
import json
import re
from datetime import datetime
from functools import lru_cache
from typing import Any

from cryptography.fernet import Fernet
from flask.testing import FlaskClient
from jsonschema import Draft202012Validator, FormatChecker
from werkzeug.test import TestResponse
from werkzeug.wrappers import Response

from status_service import create_app, openapi
from status_service.settings import Settings

DEFAULT_ONLY = {405, 500}  # answered by any route, through the document's `default`
_FORMATS = FormatChecker()


@_FORMATS.checks("date-time", raises=ValueError)
def _date_time(value: object) -> bool:
    """An ISO 8601 time with its zone, as the service writes them."""
    return not isinstance(value, str) or datetime.fromisoformat(value).tzinfo is not None


class ContractError(AssertionError):
    """An answer the OpenAPI document does not describe."""


def closed(node: Any) -> Any:
    """Return a schema with every object that lists its properties closed to others."""
    if isinstance(node, list):
        return [closed(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: closed(value) for key, value in node.items()}
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def _pattern(template: str) -> re.Pattern[str]:
    """Return a path template as a pattern: a parameter is one segment ({filename}, of a static asset, any path)."""
    parts = re.split(r"(\{[a-z_]+\})", template)
    return re.compile("^" + "".join((".+" if p == "{filename}" else "[^/]+") if p.startswith("{") else re.escape(p) for p in parts) + "$")


class Contract:
    """The document, its paths as patterns, and a validator per schema."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.components = closed(document["components"])
        # Literal segments before parameters: /webhooks/dead is not /webhooks/{webhook_id}.
        templates = sorted(document["paths"], key=lambda p: (p.count("{"), p))
        self.paths = [(_pattern(p), p) for p in templates]
        self._validators: dict[str, Draft202012Validator] = {}

    def operation(self, method: str, path: str) -> tuple[str | None, dict[str, Any] | None]:
        """Return the path template and operation that serve method on path (None, None: no path; template, None: no method)."""
        method = "get" if method.upper() == "HEAD" else method.lower()
        matched = [template for pattern, template in self.paths if pattern.match(path)]
        for template in matched:
            if method in self.document["paths"][template]:
                return template, self.document["paths"][template][method]
        return (matched[0] if matched else None), None

    def check(self, method: str, path: str, response: Response) -> str | None:
        """Return the path template that answered; raise ContractError unless the document describes this answer."""
        status = response.status_code
        template, operation = self.operation(method, path)
        where = f"{method} {path} -> {status}"
        if operation is None:
            if (template is None and status == 404) or (template is not None and status == 405) or status == 500:
                answer = self.document["paths"]["/livez"]["get"]["responses"]["default"]  # the envelope of every error
                self._body(answer, response, where)
                return template
            raise ContractError(f"{where}: no documented operation serves it")
        responses = operation["responses"]
        answer = responses.get(str(status))
        if answer is None:
            if status not in DEFAULT_ONLY:
                raise ContractError(f"{where}: status {status} is not documented for {method.upper()} {template}")
            answer = responses["default"]
        self._body(answer, response, where)
        return template

    def _body(self, answer: dict[str, Any], response: Response, where: str) -> None:
        data = response.get_data()
        content = answer.get("content")
        if not content:
            if data:
                raise ContractError(f"{where}: documented without a body, but it has {len(data)} bytes")
            return
        media = response.mimetype
        found = next((schema for name, schema in content.items() if name.split(";")[0].strip() == media), None)
        if found is None:
            raise ContractError(f"{where}: {media} is not among the documented {sorted(content)}")
        if not data or not media.endswith("json"):  # HEAD has no body; pages, badges and metrics are text
            return
        errors = sorted(self.validator(found["schema"]).iter_errors(json.loads(data)), key=lambda e: list(e.absolute_path))
        if errors:
            shown = "; ".join(f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message[:300]}" for e in errors[:5])
            raise ContractError(f"{where}: the body does not match the document: {shown}")

    def validator(self, schema: dict[str, Any]) -> Draft202012Validator:
        """Return a validator of a schema of the document (held closed), made once."""
        key = json.dumps(schema, sort_keys=True)
        if key not in self._validators:
            whole = {**closed(copy.deepcopy(schema)), "components": self.components}
            self._validators[key] = Draft202012Validator(whole, format_checker=_FORMATS)
        return self._validators[key]


@lru_cache(maxsize=1)
def contract() -> Contract:
    """Return the contract of the app as any settings build it: its routes do not depend on them."""
    app = create_app(Settings(secret_keys=Fernet.generate_key().decode(), redis_url="redis://127.0.0.1:1/0"))
    return Contract(openapi.build(app))


class CheckedClient(FlaskClient):
    """A Flask test client that checks every answer against the OpenAPI document, and notes what it got."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: set[tuple[str | None, str, int, str]] = set()  # (path template, method, status, media type)

    def open(self, *args: Any, **kwargs: Any) -> TestResponse:  # type: ignore[override]
        response = super().open(*args, **kwargs)
        request = response.request
        template = contract().check(request.method, request.path, response)
        self.seen.add((template, request.method.lower(), response.status_code, response.mimetype))
        return response
