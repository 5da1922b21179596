"""Wiring the dashboard and ``/metrics`` into a server's Flask app.

``install_downpour`` is called by ``app.create_app`` for the master model server;
``create_iteration_app`` is the app of the small dashboard server Sandblaster starts (its
shards may live in child processes, so the coordinator's records are served from the driver);
``create_status_app`` is the same for a Downpour run whose shards are child processes.
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from sparkdownpour.observe.dashboard import DownpourView, IterationView, install_dashboard
from sparkdownpour.observe.metrics import downpour_families, install_metrics, iteration_families
from sparkdownpour.transport.flask_app import guarded_app

__all__ = ["create_iteration_app", "create_status_app", "install_downpour"]


def install_downpour(app: Flask, store: Any) -> None:
    install_dashboard(app, DownpourView(store))
    # Endpoint names are create_app's view functions: params (fetch) and update (push).
    install_metrics(app, downpour_families(store.status), {"params": "fetch", "update": "push"})


def create_iteration_app(view: IterationView, *, token: str, max_request_bytes: int) -> Flask:
    """A read-only server: dashboard, ``/metrics`` and ``/v1/status`` for an ``IterationView``."""
    from flask import jsonify

    app = guarded_app(__name__, token=token, max_request_bytes=max_request_bytes)
    install_dashboard(app, view)
    install_metrics(app, iteration_families(view))

    @app.get("/v1/status")
    def status():
        return jsonify({"iterations": view.iterations(), "last": view.last(), **view.info})

    return app


def create_status_app(store: Any, *, token: str, max_request_bytes: int) -> Flask:
    """A read-only server for a Downpour run whose shards are child processes: the dashboard,
    ``/metrics`` and ``GET /v1/status``, all from ``store.status()`` over every shard."""
    from flask import jsonify

    app = guarded_app(__name__, token=token, max_request_bytes=max_request_bytes)
    install_downpour(app, store)

    @app.get("/v1/status")
    def status():
        return jsonify(store.status())

    return app
