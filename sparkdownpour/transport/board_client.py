"""The resident tasks' side of a board (``transport.board``): its polling client and where to
find it. Kept apart from the board's server so that an executor's Python worker does not import
Flask (``sparkdownpour.lazy_exports`` says why that matters)."""

from __future__ import annotations

from dataclasses import dataclass

from sparkdownpour.transport.client import HttpClient

MAX_WAIT_S = 20.0  # one long poll; the client asks again (and so notices a dead driver)


class BoardClient(HttpClient):
    """A resident task's client of a board whose routes start with ``prefix``."""

    prefix = ""

    def next_after(self, after: int, wait_s: float = MAX_WAIT_S) -> dict:
        """The work posted past ``after``, or ``{"stop": True}``; polls until one comes."""
        while True:
            answer = self.get_json(f"{self.prefix}/next?after={after}&wait={wait_s}")
            if answer.get("stop") or answer.get("version", after) > after:
                return answer  # else nothing new within wait_s: ask again


@dataclass(frozen=True)
class BoardAddress:
    """Where resident tasks find their board (picklable, shipped with the task)."""

    url: str
    token: str
    timeout: float
