"""The live dashboard at ``/``: server-rendered SVG, refreshed by a small bundled script.

Routes added to a guarded app (token or session cookie, see ``browser_auth``)::

    GET /login?code=<one-time code>   -> sets the session cookie, 303 to /
    GET /                             -> the page, charts rendered in it
    GET /v1/dashboard                 -> {"title", "sections": {id: svg/html}, "time"}
    GET /static/dashboard.{js,css}    -> shipped in the package (no CDN)

A *view* renders the sections: ``DownpourView`` from a store's ``status()`` (sampled into a
timeline each time the page polls, and fed the driver's epoch records), ``IterationView`` from
Sandblaster's per-iteration records.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from html import escape
from importlib import resources
from typing import Any

from flask import Flask, Response, jsonify, redirect, request

from sparkdownpour.transport.flask_app import BROWSER_AUTH, error_response
from sparkdownpour.observe.browser_auth import LOGIN_PATH, BrowserAuth
from sparkdownpour.observe.svg import bar_chart, fmt, line_chart

__all__ = ["DownpourView", "IterationView", "dashboard_link", "install_dashboard"]

VIEW = "sparkdownpour.dashboard_view"
POLL_MS = 1000
# No inline script or style, nothing from another origin: the page runs only our script.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def _static(name: str) -> str:
    return resources.files("sparkdownpour.observe").joinpath("static", name).read_text("utf-8")


def _table(header: list[str], rows: list[list[Any]]) -> str:
    if not rows:
        return '<p class="empty">none yet</p>'
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    thead = f"<thead><tr>{head}</tr></thead>" if any(header) else ""
    return f"<table>{thead}<tbody>{body}</tbody></table>"


def _device(status: dict, partition: str) -> str:
    """The device of a partition's latest attempt, where the status reports devices
    (``attempts[partition]["device"]`` or ``devices["p<partition>-a<attempt>"]``); else empty."""
    latest = status.get("attempts", {}).get(partition, {})
    if latest.get("device"):
        return str(latest["device"])
    devices = status.get("devices") or {}
    return str(devices.get(f"p{partition}-a{latest.get('attempt', 0)}", ""))


class DownpourView:
    """Sections for a Downpour master model server; samples ``store.status()`` when polled."""

    MIN_SAMPLE_S = 0.4
    MAX_SAMPLES = 900

    def __init__(self, store: Any, title: str = "Downpour SGD") -> None:
        self.store, self.title = store, title
        self._samples: deque = deque(maxlen=self.MAX_SAMPLES)  # (t, applied, live loss)
        self._epochs: list[dict] = []
        self._lock = threading.Lock()
        self._t0 = time.monotonic()

    def note_record(self, record: dict) -> None:
        """An epoch's history record from the driver (``History.listeners``)."""
        with self._lock:
            self._epochs.append({k: record.get(k) for k in ("epoch", "loss", "val_accuracy")})

    def _sample(self, status: dict) -> list[tuple]:
        now = time.monotonic() - self._t0
        live = getattr(self.store, "live_loss", lambda: None)()
        with self._lock:
            if not self._samples or now - self._samples[-1][0] >= self.MIN_SAMPLE_S:
                self._samples.append((now, status["updates_applied"], live))
            return list(self._samples)

    def sections(self) -> dict[str, str]:
        s = self.store.status()
        samples = self._sample(s)
        rates = [(t1, (n1 - n0) / (t1 - t0)) for (t0, n0, _), (t1, n1, _)
                 in zip(samples, samples[1:]) if t1 > t0]
        with self._lock:
            epochs = list(self._epochs)
        stale = s.get("staleness", {})
        hist = stale.get("histogram", {})
        order = sorted(hist, key=lambda k: 10**9 if k.startswith(">") else int(k))
        replicas = [[key, n, _device(s, key.split("/")[-1])]
                    for key, n in s.get("progress", {}).items()]
        pushes = [[r, n] for r, n in sorted(s.get("replicas", {}).items())]
        shards = [[i, sh.get("updates_applied", 0), sh.get("bytes_in", 0),
                   sh.get("bytes_out", 0), fmt(sh.get("staleness", {}).get("mean"))]
                  for i, sh in enumerate(s.get("shards") or [])]
        summary = [["step", s["step"]], ["epoch", s.get("epoch")],
                   ["updates applied", s["updates_applied"]],
                   ["updates rejected", s.get("updates_rejected", 0)],
                   ["refused", ", ".join(f"{k} {v}" for k, v in s.get("refused", {}).items())],
                   ["staleness mean / max", f"{fmt(stale.get('mean'))} / {stale.get('max', 0)}"],
                   ["bytes in / out", f"{s['bytes_in']} / {s['bytes_out']}"],
                   ["diverging replicas", ", ".join(s.get("diverging", {})) or "none"],
                   ["rule", s.get("rule", "")]]
        return {
            "summary": _table(["", ""], summary),
            "loss": line_chart([(t, loss) for t, _, loss in samples if loss is not None],
                               "loss (replicas' recent mean)", x_label="s"),
            "epoch_loss": line_chart([(e["epoch"], e["loss"]) for e in epochs
                                      if e["loss"] is not None], "loss per epoch",
                                     x_label="epoch"),
            "rate": line_chart(rates, "updates / s", x_label="s"),
            "staleness": bar_chart([(k, hist[k]) for k in order], "staleness histogram"),
            "replicas": _table(["epoch/partition", "mini-batches applied", "device"], replicas)
            + _table(["replica", "updates applied"], pushes),
            "shards": _table(["shard", "updates", "bytes in", "bytes out", "mean staleness"],
                             shards) if shards else "",
        }


class IterationView:
    """Sections for Sandblaster: objective and gradient norm per L-BFGS iteration."""

    def __init__(self, title: str = "Sandblaster L-BFGS", info: dict | None = None) -> None:
        self.title, self.info = title, dict(info or {})
        self._records: list[dict] = []
        self._lock = threading.Lock()

    def note_record(self, record: dict) -> None:
        with self._lock:
            self._records.append(dict(record))

    def iterations(self) -> int:
        with self._lock:
            return len(self._records)

    def last(self) -> dict:
        with self._lock:
            return dict(self._records[-1]) if self._records else {}

    def sections(self) -> dict[str, str]:
        with self._lock:
            records = list(self._records)
        last = records[-1] if records else {}
        summary = [["iterations", len(records)], ["evaluations", last.get("evaluations", 0)],
                   ["objective", fmt(last.get("objective"))],
                   ["gradient norm", fmt(last.get("grad_norm"))]]
        summary += [[k, v] for k, v in self.info.items()]
        return {
            "summary": _table(["", ""], summary),
            "objective": line_chart([(r["iteration"], r["objective"]) for r in records],
                                    "objective", x_label="iteration"),
            "grad_norm": line_chart([(r["iteration"], r["grad_norm"]) for r in records],
                                    "gradient norm (log)", log=True, x_label="iteration"),
        }


def _page(view: Any, sections: dict[str, str]) -> str:
    wide = ("replicas", "summary", "shards")
    blocks = "".join(f'<section id="{key}" class="{"wide" if key in wide else "chart"}">'
                     f"{html}</section>" for key, html in sections.items())
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(view.title)}</title>"
            '<link rel="stylesheet" href="/static/dashboard.css"></head>'
            f'<body data-poll-ms="{POLL_MS}"><h1>{escape(view.title)}</h1>'
            '<p id="state" class="state">live</p>'
            f'<main>{blocks}</main><script src="/static/dashboard.js"></script></body></html>')


def _secure(resp: Response) -> Response:
    resp.headers["Content-Security-Policy"] = CSP
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Referrer-Policy"] = "no-referrer"
    return resp


def install_dashboard(app: Flask, view: Any) -> BrowserAuth:
    """Add the dashboard routes to a guarded ``app``; returns its ``BrowserAuth``."""
    auth = BrowserAuth()
    app.extensions[BROWSER_AUTH] = auth
    app.extensions[VIEW] = view

    @app.get(LOGIN_PATH)
    def login() -> Response:
        if not auth.redeem(request.args.get("code")):
            return _secure(error_response(403, "this login link is invalid or was already used; "
                                          "ask the driver for a new one (dashboard_link)"))
        resp = redirect("/", code=303)  # the code leaves the address bar here
        resp.set_cookie(auth.cookie_name, auth.session, httponly=True, samesite="Strict",
                        secure=request.is_secure, path="/")
        return _secure(resp)

    @app.get("/")
    def index() -> Response:
        return _secure(Response(_page(view, view.sections()), content_type="text/html; "
                                "charset=utf-8"))

    @app.get("/v1/dashboard")
    def data() -> Response:
        return _secure(jsonify({"title": view.title, "sections": view.sections(),
                                "time": time.time()}))

    @app.get("/static/dashboard.<ext>")
    def static_file(ext: str) -> Response:
        types = {"js": "text/javascript", "css": "text/css"}
        if ext not in types:
            return error_response(404, f"no static file dashboard.{ext[:20]}")
        return _secure(Response(_static(f"dashboard.{ext}"),
                                content_type=f"{types[ext]}; charset=utf-8"))

    return auth


def dashboard_link(server: Any) -> str | None:
    """A fresh one-time login link for ``server``'s dashboard (None if it has none)."""
    auth = server.app.extensions.get(BROWSER_AUTH)
    return None if auth is None else f"{server.url}{LOGIN_PATH}?code={auth.mint_code()}"


def dashboard_view(server: Any) -> Any:
    return server.app.extensions.get(VIEW)
