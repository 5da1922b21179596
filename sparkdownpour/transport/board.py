"""A board that long-running Spark tasks poll for their next piece of work, and report to.

Two trainers keep their Spark tasks resident for a whole fit instead of running one Spark job
per step: Sandblaster's evaluators (``lbfgs.resident``: one post per loss/gradient evaluation)
and Downpour's replicas (``resident_replicas``: one post per epoch). Both talk to a board on the
driver: the driver posts the next piece of work (a version number and a few JSON fields), every
task long-polls for it, does it and reports its result for each of its portions, and the driver
collects the results once every portion reported. The board counts one report per portion and
version: a task of a retried stage that reports a portion again is told so and not counted
twice; a report for a version that is over is ignored.

This module holds what both share: the board's state and its long-poll route
(``GET <prefix>/next?after=N&wait=S``: the posted fields once past N, ``{"version": N}`` after
S seconds, ``{"stop": true}`` at the end), the client's polling loop, and the driver's
``ResidentTasks`` (the board's server and the resident stage's job thread). What a result
holds, and how it is checked, is each trainer's.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable

from flask import Response, jsonify, request

from sparkdownpour.transport.board_client import MAX_WAIT_S, BoardAddress, BoardClient
from sparkdownpour.transport.flask_app import error_response
from sparkdownpour.transport.http_server import HttpServer

logger = logging.getLogger(__name__)

__all__ = ["MAX_WAIT_S", "Board", "BoardAddress", "BoardClient", "ResidentTasks", "add_board_routes"]


class Board:
    """The work posted last, and the results reported for it, one per portion."""

    def __init__(self, portions: int) -> None:
        self.portions = portions
        self._cond = threading.Condition()
        self.version = 0
        self.posted: dict = {}
        self.stopped = False
        self.reports = 0
        self._counted: dict[int, object] = {}

    def post(self, **fields) -> int:
        """Post the next piece of work (JSON-able ``fields``); returns its version."""
        with self._cond:
            self.version += 1
            self.posted = fields
            self._counted = {}
            self._cond.notify_all()
            return self.version

    def stop(self) -> None:
        with self._cond:
            self.stopped = True
            self._cond.notify_all()

    def next_after(self, after: int, wait_s: float) -> dict:
        """What a task polling after version ``after`` should do (waits up to ``wait_s``)."""
        with self._cond:
            self._cond.wait_for(lambda: self.stopped or self.version > after, timeout=wait_s)
            if self.stopped:
                return {"stop": True}
            if self.version > after:
                return {"version": self.version, **self.posted}
            return {"version": after}

    def count(self, version: int, portion: int, result: object) -> tuple[bool, str]:
        """Count ``result`` as ``portion``'s for ``version``: ``(counted, why not)``."""
        with self._cond:
            self.reports += 1
            if version != self.version:
                return False, f"version {version} is over (the board is at {self.version})"
            if portion in self._counted:
                return False, f"portion {portion} was already counted for version {version}"
            self._counted[portion] = result
            self._cond.notify_all()
            return True, ""

    def results(self, version: int, failure: Callable[[], BaseException | None],
                poll_s: float = 0.5, *, expected: Callable[[], int] | None = None) -> list:
        """Wait until every portion (``expected()`` of them, default all) reported for
        ``version``; returns the results in portion order. Raises what ``failure()`` returns
        (the tasks' Spark job failed or ended) as soon as it returns something."""
        with self._cond:
            while len(self._counted) < (expected() if expected else self.portions):
                problem = failure()
                if problem is not None:
                    raise problem
                self._cond.wait(timeout=poll_s)
            if self.version != version:
                raise RuntimeError(f"version {version} was overtaken by {self.version}")
            return [self._counted[p] for p in sorted(self._counted)]

    def wake(self) -> None:
        """Wake a waiting ``results`` so it asks ``failure()`` now (the tasks' job ended)."""
        with self._cond:
            self._cond.notify_all()

    def status(self) -> dict:
        with self._cond:
            return {"version": self.version, "portions": self.portions,
                    "counted": len(self._counted), "reports": self.reports,
                    "stopped": self.stopped}


def add_board_routes(app, board: Board, prefix: str) -> None:
    """``GET <prefix>/next`` (the long poll) and ``GET /v1/status`` on ``app``."""

    @app.get(f"{prefix}/next")
    def next_work() -> Response:
        try:
            after = int(request.args.get("after", "0"))
            wait_s = min(max(float(request.args.get("wait", "0")), 0.0), MAX_WAIT_S)
        except ValueError as e:
            return error_response(400, f"after and wait must be numbers: {e}")
        return jsonify(board.next_after(after, wait_s))

    @app.get("/v1/status")
    def status() -> Response:
        return jsonify(board.status())


class ResidentTasks:
    """The driver's side of a board: its server, and the resident tasks' Spark job in a thread.

    The server starts at once (so the reachability probe can dial it); ``launch(job, cancel)``
    runs ``job()`` (the Spark action of the resident stage) on a thread of its own, and
    ``failure()`` says how it ended if it did, for ``Board.results`` to raise. ``close()`` tells
    the tasks to stop and waits for the job, interrupting it (``cancel()``) if it does not end
    within the timeout, or at once when closing because of an error.
    """

    def __init__(self, board: Board, app_factory: Callable, *, host: str, token: str,
                 max_request_bytes: int, timeout: float, name: str,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.board, self.name, self._timeout = board, name, timeout
        self.server = HttpServer(board, host=host, token=token,
                                 max_request_bytes=max_request_bytes, ssl_context=ssl_context,
                                 app_factory=app_factory).start()
        self.address = BoardAddress(self.server.url, token, timeout)
        self._error: BaseException | None = None
        self._done = False
        self._cancel: Callable[[], None] = lambda: None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return self.server.url

    def launch(self, job: Callable[[], object], cancel: Callable[[], None]) -> None:
        def run() -> None:
            try:
                job()
            except BaseException as e:  # handed to the thread that collects results
                self._error = e
            finally:
                self._done = True
                self.board.wake()

        self._cancel = cancel
        self._thread = threading.Thread(target=run, name=self.name, daemon=True)
        self._thread.start()

    def failure(self) -> BaseException | None:
        if self._error is not None:
            return self._error
        if self._done:
            return RuntimeError(f"the {self.name} Spark job ended before its work did; "
                                "please report this")
        return None

    def close(self, interrupt: bool = False) -> None:
        self.board.stop()
        thread = self._thread
        if thread is not None:
            if not interrupt:
                thread.join(timeout=self._timeout)
            if thread.is_alive():
                if not interrupt:
                    logger.warning("the %s did not stop within %.0f s; interrupting their "
                                   "Spark job", self.name, self._timeout)
                self._cancel()
                thread.join(timeout=self._timeout)
        self.server.stop()

    def __enter__(self):
        return self

    def __exit__(self, kind, *exc: object) -> None:
        self.close(interrupt=kind is not None)
