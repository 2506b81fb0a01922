"""The serving baseline: a hello-world Flask app run with the project's gunicorn settings."""
from flask import Flask

app = Flask(__name__)


@app.get("/status")
def status() -> dict[str, str]:
    """Answer the smallest JSON document Flask can make."""
    return {"status": "ok"}
