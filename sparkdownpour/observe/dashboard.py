"""The live dashboard at ``/``: server-rendered SVG, refreshed by a small bundled script.

Routes added to a guarded app (token or session cookie, see ``browser_auth``)::

    GET /login?code=<one-time code>   -> sets the session cookie, 303 to /
    GET /                             -> the page, charts rendered in it
    GET /v1/dashboard                 -> {"title", "sections": {id: svg/html}, "time",
                                          "progress" (Downpour: epoch, shares, eta_s)}
    GET /static/dashboard.{js,css}    -> shipped in the package (no CDN)

A *view* renders the sections: ``DownpourView`` from a store's ``status()`` (sampled into a
bounded timeline from the server's start, whether or not a page is open, and fed the driver's
epoch records and plan), ``IterationView`` from Sandblaster's per-iteration records.
"""

from __future__ import annotations

import threading
import time
from html import escape
from importlib import resources
from typing import Any

from flask import Flask, Response, jsonify, redirect, request

from sparkdownpour.observe.browser_auth import LOGIN_PATH, BrowserAuth
from sparkdownpour.observe.svg import bar_chart, fmt, line_chart
from sparkdownpour.transport.flask_app import BROWSER_AUTH, SERVICE_TICK, error_response

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


class Timeline:
    """A bounded time series that always reaches back to the run's start: samples at least
    ``interval`` seconds apart; when ``capacity`` is reached every other one is dropped (the
    first stays) and the interval doubles, so a long run keeps evenly spaced points."""

    def __init__(self, capacity: int = 600, interval: float = 0.5) -> None:
        self.capacity, self.interval = capacity, interval
        self.samples: list[tuple] = []

    def due(self, t: float) -> bool:
        return not self.samples or t - self.samples[-1][0] >= self.interval

    def add(self, t: float, *values: Any) -> None:
        if not self.due(t):
            return
        self.samples.append((t, *values))
        if len(self.samples) >= self.capacity:
            self.samples = self.samples[::2]
            self.interval *= 2


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown yet"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return (f"{hours} h {rest // 60:02d} min" if hours else
            f"{rest // 60} min {rest % 60:02d} s" if rest >= 60 else f"{rest} s")


class DownpourView:
    """Sections for a Downpour master model server.

    ``tick()`` samples ``store.status()`` into a ``Timeline`` from the moment the server starts
    (the server's own loop calls it, see ``install_dashboard``), so a page opened late still
    draws the whole run; the driver adds each epoch's record (``note_record``, with held-out
    metrics) and the run's plan (``plan``: epochs and the updates expected, for the progress
    and the time left).
    """

    SAMPLE_S = 0.5
    MAX_SAMPLES = 600

    def __init__(self, store: Any, title: str = "Downpour SGD", clock=time.monotonic) -> None:
        self.store, self.title = store, title
        # (t, updates applied, live loss, staleness sum, staleness count) per sample
        self._timeline = Timeline(self.MAX_SAMPLES, self.SAMPLE_S)
        self._epochs: list[dict] = []
        self._lock = threading.Lock()
        self._clock = clock
        self._t0 = clock()
        self.plan: dict = {}  # {"epochs": E, "updates": N}, set by the driver (links.announce)
        self.last_progress: dict = {}

    def note_record(self, record: dict) -> None:
        """An epoch's history record from the driver (fed by the trainer's on_epoch_end callback)."""
        with self._lock:
            self._epochs.append({k: record.get(k) for k in (
                "epoch", "loss", "val_loss", "val_accuracy", "updates", "wall_time_s",
                "compute_share")})

    def tick(self) -> None:
        """Sample the store if the timeline is due (cheap to call often)."""
        if self._timeline.due(self._clock() - self._t0):
            self._sample(self.store.status())

    def _sample(self, status: dict) -> list[tuple]:
        live = getattr(self.store, "live_loss", lambda: None)()
        stale = status.get("staleness", {})
        count = sum(stale.get("histogram", {}).values())
        with self._lock:
            self._timeline.add(self._clock() - self._t0, status["updates_applied"], live,
                               float(stale.get("mean", 0.0)) * count, count)
            return list(self._timeline.samples)

    def progress(self, status: dict, samples: list[tuple]) -> dict:
        """Where the run is: epoch, share of the epoch and of the run, seconds left (estimate,
        from the update rate since the first sample)."""
        epochs, planned = self.plan.get("epochs"), self.plan.get("updates")
        applied = status["updates_applied"]
        out: dict[str, Any] = {"epoch": status.get("epoch"), "epochs": epochs,
                               "updates": applied, "updates_planned": planned,
                               "elapsed_s": samples[-1][0] if samples else 0.0}
        if planned:
            out["fraction"] = min(applied / planned, 1.0)
            if epochs:
                this = status.get("this_epoch", {}).get("updates_applied", 0)
                out["epoch_fraction"] = min(this / (planned / epochs), 1.0)
            (t0, a0, *_), (t1, a1, *_) = samples[0], samples[-1]
            rate = (a1 - a0) / (t1 - t0) if t1 > t0 and a1 > a0 else None
            out["eta_s"] = 0.0 if applied >= planned else \
                (planned - applied) / rate if rate else None
        return out

    def sections(self) -> dict[str, str]:
        s = self.store.status()
        samples = self._sample(s)
        progress = self.last_progress = self.progress(s, samples)
        rates = [(t1, (n1 - n0) / (t1 - t0)) for (t0, n0, *_), (t1, n1, *_)
                 in zip(samples, samples[1:]) if t1 > t0]
        staleness = [(t1, (z1 - z0) / (c1 - c0)) for (_, _, _, z0, c0), (t1, _, _, z1, c1)
                     in zip(samples, samples[1:]) if c1 > c0]
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

        def per_epoch(key: str, title: str) -> str:
            return line_chart([(e["epoch"], e[key]) for e in epochs if e.get(key) is not None],
                              title, x_label="epoch")

        return {
            "progress": _progress_table(progress),
            "summary": _table(["", ""], summary),
            "loss": line_chart([(t, loss) for t, _, loss, *_ in samples if loss is not None],
                               "loss (replicas' recent mean)", x_label="s"),
            "rate": line_chart(rates, "updates / s", x_label="s"),
            "staleness_time": line_chart(staleness, "mean staleness", x_label="s"),
            "epoch_loss": per_epoch("loss", "loss per epoch"),
            "val_loss": per_epoch("val_loss", "held-out loss per epoch"),
            "val_accuracy": per_epoch("val_accuracy", "held-out accuracy per epoch"),
            "compute_share": per_epoch("compute_share", "replicas' compute share per epoch "
                                       "(compute time / task time)"),
            "staleness": bar_chart([(k, hist[k]) for k in order], "staleness histogram"),
            "replicas": _table(["epoch/partition", "mini-batches applied", "device"], replicas)
            + _table(["replica", "updates applied"], pushes),
            "shards": _table(["shard", "updates", "bytes in", "bytes out", "mean staleness"],
                             shards) if shards else "",
        }


def _progress_table(p: dict) -> str:
    def share(key: str) -> str:
        return f"{p[key]:.0%}" if p.get(key) is not None else "unknown yet"

    epoch = f"{p.get('epoch')} / {p['epochs']}" if p.get("epochs") else str(p.get("epoch"))
    planned = f" of {p['updates_planned']}" if p.get("updates_planned") else ""
    return _table(["", ""], [["epoch", f"{epoch} ({share('epoch_fraction')} of it done)"],
                             ["run", f"{share('fraction')} ({p['updates']}{planned} updates)"],
                             ["elapsed", _duration(p.get("elapsed_s"))],
                             ["time left (estimate)", _duration(p.get("eta_s"))]])


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
    wide = ("progress", "replicas", "summary", "shards")
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
    if callable(getattr(view, "tick", None)):  # sampled by the server's loop from its start
        app.extensions[SERVICE_TICK] = view.tick

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
        payload = {"title": view.title, "sections": view.sections(), "time": time.time()}
        if getattr(view, "last_progress", None) is not None:
            payload["progress"] = view.last_progress
        return _secure(jsonify(payload))

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
