"""The serving baseline: a hello-world Flask app run with the project's gunicorn settings."""
import json

from flask import Flask, request

app = Flask(__name__)


@app.get("/status")
def status() -> dict[str, str]:
    """Answer the smallest JSON document Flask can make."""
    return {"status": "ok"}


@app.put("/admin/tenants/<tenant_id>/integrations/<integration_id>")
def put_integration(tenant_id: str, integration_id: str) -> tuple[dict[str, str], int]:
    """Read and parse a JSON body, store nothing, and answer 201 (the admin benchmark's baseline)."""
    data = json.loads(request.get_data())
    return {"id": integration_id, "tenant": tenant_id, "type": data["type"]}, 201
