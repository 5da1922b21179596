"""A resident evaluator task (``lbfgs.resident``'s executor side): reads its portion of the
cached blocks once and evaluates every point the evaluation board posts. Imports nothing of the
driver's (no Flask, no pyspark.ml): ``tests/test_layers.py`` checks it."""

from __future__ import annotations

from collections.abc import Iterator

from sparkdownpour.lbfgs.board_client import EvaluationClient
from sparkdownpour.lbfgs.stage import StageSpec, clients_for, evaluator_for
from sparkdownpour.transport.board_client import MAX_WAIT_S, BoardAddress


def serve_portion(batches: Iterator, spec: StageSpec, board: BoardAddress,
                  rows_sparse: bool | None = None) -> Iterator:
    """``mapInArrow(barrier=True)`` function: read this task's blocks once, then evaluate
    every point the board posts until it says stop. Its results go to the board; it yields
    no rows. ``rows_sparse`` not None: the batches are the data's own ``features, label``
    rows (sparse or dense), parsed here, rather than cached blocks."""
    from pyspark import TaskContext

    from sparkdownpour.lbfgs.blocks import parsed_rows, read_blocks
    from sparkdownpour.lbfgs.vector_client import fetch_vector

    portion = TaskContext.get().partitionId()
    # kept for the whole fit (a cached block's arrays are views of its Arrow buffers)
    blocks = list(read_blocks(batches) if rows_sparse is None
                  else parsed_rows(batches, rows_sparse))
    evaluator = evaluator_for(spec) if blocks else None
    client = EvaluationClient(board.url, board.token, timeout=board.timeout)
    wait_s = min(MAX_WAIT_S, board.timeout / 2)
    version = 0
    try:
        while True:
            answer = client.next_after(version, wait_s)
            if answer.get("stop"):
                break
            version = int(answer["version"])
            loss_sum, grad_sum, rows = 0.0, None, 0
            if evaluator is not None:
                evaluator.assign(fetch_vector(clients_for(spec), answer["point"]))
                loss_sum, grad_sum, rows = evaluator.sums(blocks, spec.chunk_rows)
            client.report(version, portion, loss_sum, grad_sum, rows,
                          [evaluator.label] if evaluator is not None else [])
    finally:
        client.close()
    yield from ()
