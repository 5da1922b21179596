"""Driver-side glue for watching a run: the dashboard link, Sandblaster's dashboard server.

Kept out of ``downpour.py`` and ``sandblaster.py`` so that they need only a few hook lines.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from sparkdownpour.observe.dashboard import IterationView, dashboard_link, dashboard_view
from sparkdownpour.observe.routes import create_iteration_app
from sparkdownpour.transport.http_server import HttpServer

logger = logging.getLogger(__name__)

__all__ = ["announce", "iteration_dashboard", "read_token_file"]

MIN_TOKEN_CHARS = 16


def read_token_file(path) -> str | None:
    """The run's bearer token from the first line of ``path`` (None: a random one per run)."""
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            token = handle.readline().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read token_file {str(path)!r}: {e}") from e
    if len(token) < MIN_TOKEN_CHARS or not token.isascii() or not token.isprintable():
        raise ValueError(f"token_file {str(path)!r} must start with a printable ASCII token of "
                         f"at least {MIN_TOKEN_CHARS} characters; make one with: python -c "
                         "'import secrets; print(secrets.token_urlsafe(32))' > token.txt")
    return token


def announce(server, history, verbose: int, title: str, *, plan: dict | None = None):
    """Mint the one-time dashboard link, keep it in ``history.info["dashboard"]``, log it and
    (with ``verbose``) print it above the progress bar. ``plan`` (``{"epochs", "updates"}``)
    lets the dashboard show the run's progress and the time left. Returns the server's
    dashboard view (None: it serves none), which the trainer feeds each history record."""
    view = dashboard_view(server)
    if view is None:
        return None
    view.title = title
    if plan:
        view.plan = dict(plan)
    link = dashboard_link(server)
    history.info["dashboard"] = link
    logger.info("%s: live dashboard at %s (one-time link; it sets a session cookie)", title,
                link)
    if verbose:
        from tqdm.auto import tqdm

        tqdm.write(f"{title}: dashboard {link}")
    return view


@contextlib.contextmanager
def iteration_dashboard(host: str, history, verbose: int, title: str, *,
                        max_request_bytes: int = 1 << 20) -> Iterator[IterationView]:
    """Sandblaster's dashboard: a small read-only server on the driver for the coordinator's
    per-iteration records (its shards may run in child processes)."""
    view = IterationView(title, info={"portions": history.info.get("partitions"),
                                      "shards": history.info.get("shards")})
    with HttpServer(view, host=host, max_request_bytes=max_request_bytes,
                         app_factory=create_iteration_app) as server:
        history.info["dashboard_server"] = server.url
        announce(server, history, verbose, title)  # fed by Sandblaster's iteration callback
        yield view
