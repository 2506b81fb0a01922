"""status-service: tells each customer whether its image-generation integrations work."""
from __future__ import annotations

import os

from flask import Flask

from . import cli
from .settings import Settings, configure_logging, credentials_cipher, from_env, redis_url
from .store import Store, connect
from .web import admin, docs, errors, health, history, metrics, status
from .web import maintenance as maintenance_routes, webhooks as webhook_routes  # not status_service.webhooks


def create_app(settings: Settings | None = None) -> Flask:
    """Build the Flask app; it reads the environment unless given settings."""
    settings = settings or from_env(os.environ)
    configure_logging(settings)

    app = Flask(__name__)
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep the documented key order
    url = redis_url(settings)
    # Made on first use: a cluster client connects as it is made, and a worker must boot (and
    # answer 503) while the cluster is down rather than crash-loop.
    store = Store(lambda: connect(url, settings.redis_timeout_s, settings.redis_cluster), settings.key_prefix, settings.redis_timeout_s)
    status.install(app.extensions, store, settings.web_memory_bytes)
    history.install(app.extensions)
    admin.install(app.extensions, settings.admin_key_sha256, credentials_cipher(settings))
    # No endpoint reads a larger body; one byte more, so the admin API can tell a chunked body is too long.
    app.config["MAX_CONTENT_LENGTH"] = admin.MAX_BODY_BYTES + 1
    app.register_blueprint(status.bp)
    app.register_blueprint(history.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(webhook_routes.bp)
    app.register_blueprint(maintenance_routes.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(docs.bp)
    metrics.install(app, settings.metrics_token)
    errors.register(app)
    cli.install(app, settings)
    return app
