"""What a replica does after the server refuses a positioned push (exactly-once)."""

from __future__ import annotations

import logging

from sparkdownpour.errors import ParameterServerError
from sparkdownpour.server.client import PushOutcome
from sparkdownpour.server.ledger import Position

__all__ = ["continue_after_refusal"]

# The loop's logger, as before this module existed: a filter set on it still catches these.
logger = logging.getLogger("sparkdownpour.replica.loop")


def continue_after_refusal(outcome: PushOutcome, position: Position, replica_id: str) -> bool:
    """After a refused push: True to skip ahead to the server's progress, False to stop."""
    reason = outcome.refusal
    if reason == "duplicate":
        logger.info("replica %s: mini-batches [%d, %d) were applied by another attempt; "
                    "skipping to %s", replica_id, position.begin, position.end,
                    outcome.progress)
        return True
    if reason == "closed_epoch":  # the driver has moved on: nothing left to contribute
        logger.info("replica %s: epoch %d is closed on the server; stopping", replica_id,
                    position.epoch)
        return False
    raise ParameterServerError(
        f"replica {replica_id}: push of mini-batches [{position.begin}, {position.end}) of "
        f"partition {position.partition} refused as {reason} (the server is at "
        f"{outcome.progress}); the partition's mini-batches are not in the same order "
        "as in an earlier attempt, so this attempt cannot continue")
