"""The evaluation board of resident evaluators: counting, its wire format, its HTTP routes."""

import threading

import numpy as np
import pytest

from sparkdownpour.errors import ParameterServerError
from sparkdownpour.lbfgs.board import (
    EvaluationBoard,
    EvaluationClient,
    create_board_app,
    decode_result,
    encode_result,
)
from sparkdownpour.transport.frames import ProtocolError
from sparkdownpour.transport.http_server import HttpServer


def no_failure():
    return None


def test_each_portion_counts_once_per_evaluation_and_late_reports_are_ignored():
    board = EvaluationBoard(portions=2, size=3)
    first = board.post("x")
    assert board.report(first, 0, 1.5, np.ones(3), 10, ["CPU:0"]) == (True, "")
    counted, why = board.report(first, 0, 1.5, np.ones(3), 10, ["CPU:0"])  # a retried task
    assert not counted and "already counted" in why
    assert board.report(first, 1, 0.0, None, 0, []) == (True, "")  # an empty portion
    loss, grad, rows, devices = board.collect(first, no_failure)
    assert (loss, rows, devices) == (1.5, 10, ("CPU:0",)) and grad.tolist() == [1.0, 1.0, 1.0]
    second = board.post("trial")
    counted, why = board.report(first, 1, 9.0, np.ones(3), 5, [])
    assert not counted and "is over" in why
    assert board.status() == {"version": second, "portions": 2, "counted": 0, "reports": 4,
                              "stopped": False}


def test_collect_raises_what_the_evaluators_job_failed_with():
    board = EvaluationBoard(portions=2, size=1)
    version = board.post("x")
    board.report(version, 0, 1.0, np.ones(1), 1, [])
    failed = []
    threading.Timer(0.2, lambda: (failed.append(RuntimeError("task lost")), board.wake())).start()
    with pytest.raises(RuntimeError, match="task lost"):
        board.collect(version, lambda: failed[0] if failed else None, poll_s=5.0)


def test_next_after_waits_for_a_newer_version_then_says_stop():
    board = EvaluationBoard(portions=1, size=1)
    assert board.next_after(0, wait_s=0.05) == {"version": 0}  # nothing posted yet
    threading.Timer(0.1, board.post, args=("x",)).start()
    assert board.next_after(0, wait_s=5.0) == {"version": 1, "point": "x"}
    threading.Timer(0.1, board.stop).start()
    assert board.next_after(1, wait_s=5.0) == {"stop": True}


def test_results_are_checked_field_by_field():
    good = b"".join(encode_result(3, 1, 2.5, np.arange(4.0), 7, ["GPU:0"]))
    fields = decode_result(good, size=4, portions=2)
    assert fields["grad"].tolist() == [0.0, 1.0, 2.0, 3.0] and fields["devices"] == ["GPU:0"]
    for body, message in [
        (b"".join(encode_result(3, 2, 2.5, np.arange(4.0), 7, [])), "not one of the 2"),
        (b"".join(encode_result(3, 1, 2.5, np.arange(3.0), 7, [])), "expected 32"),
        (b"".join(encode_result(3, 1, 0.0, np.arange(4.0), 0, [])), "sends no gradient"),
        (b"\xff\xff\xff\x00{}", "does not fit"),
        (b"".join(encode_result(3, 1, 2.5, None, 7, [])), "expected 32"),
    ]:
        with pytest.raises(ProtocolError, match=message):
            decode_result(body, size=4, portions=2)


def test_the_routes_need_the_token_and_count_over_http():
    board = EvaluationBoard(portions=1, size=2)
    with HttpServer(board, host="127.0.0.1", token="secret", max_request_bytes=1 << 16,
                    app_factory=create_board_app) as server:
        with EvaluationClient(server.url, "wrong", timeout=5.0) as intruder, \
                pytest.raises(ParameterServerError, match="401"):
            intruder.next_after(0, wait_s=0.0)
        version = board.post("x")
        with EvaluationClient(server.url, "secret", timeout=5.0) as client:
            assert client.next_after(0, wait_s=1.0) == {"version": version, "point": "x"}
            assert client.report(version, 0, 0.5, np.array([1.0, 2.0]), 4, ["CPU:0"]) == \
                {"counted": True, "why": ""}
            assert not client.report(version, 0, 0.5, np.array([1.0, 2.0]), 4, [])["counted"]
            with pytest.raises(ParameterServerError, match="400.*expected 16"):
                client.report(version, 0, 0.5, np.array([1.0]), 4, [])
            assert board.collect(version, no_failure)[2] == 4
            board.stop()
            assert client.next_after(version, wait_s=1.0) == {"stop": True}
