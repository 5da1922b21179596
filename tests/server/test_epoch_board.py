"""The epoch board of resident replicas: who is expected, counting once, its HTTP routes."""

import threading

import pytest

from sparkdownpour.errors import ParameterServerError
from sparkdownpour.server.epoch_board import EpochBoard, EpochClient, create_epoch_board_app
from sparkdownpour.transport.frames import ProtocolError
from sparkdownpour.transport.http_server import HttpServer

NAMES = ("partition", "steps", "device")


def row(partition, steps=3):
    return {"partition": partition, "steps": steps, "device": "/CPU:0"}


def no_failure():
    return None


def test_an_epoch_waits_for_every_partition_the_tasks_registered():
    # 5 partitions on 2 tasks; partition 3 is empty, so no task holds it.
    board = EpochBoard(partitions=5, tasks=2, stat_names=NAMES)
    assert board.expected() == float("inf")  # a task has not said what it holds yet
    board.register(0, [0, 2, 4])
    assert board.expected() == float("inf")
    board.register(1, [1])
    board.register(1, [1])  # a rerun stage's task registers again: the same partitions
    assert board.expected() == 4
    version = board.open(1)
    for partition in (4, 0, 1):
        assert board.report(version, partition, row(partition)) == (True, "")
    counted, why = board.report(version, 0, row(0, steps=99))  # a rerun stage's task
    assert not counted and "already counted" in why
    threading.Timer(0.2, board.report, args=(version, 2, row(2))).start()
    rows = board.collect(version, no_failure, poll_s=5.0)
    assert [r["partition"] for r in rows] == [0, 1, 2, 4] and rows[0]["steps"] == 3
    later = board.open(2)
    counted, why = board.report(version, 1, row(1))
    assert not counted and "is over" in why
    assert board.next_after(version, wait_s=0.0) == {"version": later, "epoch": 2}


def test_collect_raises_what_the_replicas_job_failed_with():
    board = EpochBoard(partitions=2, tasks=1, stat_names=NAMES)
    board.register(0, [0, 1])
    version = board.open(1)
    board.report(version, 0, row(0))
    failed = []
    threading.Timer(0.2, lambda: (failed.append(RuntimeError("stage aborted")),
                                  board.wake())).start()
    with pytest.raises(RuntimeError, match="stage aborted"):
        board.collect(version, lambda: failed[0] if failed else None, poll_s=5.0)


def test_a_statistics_row_must_have_exactly_the_fields_and_plain_values():
    board = EpochBoard(partitions=1, tasks=1, stat_names=NAMES)
    assert board.check_stats(row(0)) == row(0)
    for stats, message in [({"partition": 0}, "expected"), ([1, 2], "list"),
                           ({**row(0), "extra": 1}, "extra"),
                           ({**row(0), "device": {"nested": 1}}, "device is"),
                           ({**row(0), "device": "x" * 3000}, "device is")]:
        with pytest.raises(ProtocolError, match=message):
            board.check_stats(stats)


def test_the_routes_need_the_token_check_what_they_get_and_count_over_http():
    board = EpochBoard(partitions=2, tasks=1, stat_names=NAMES)
    with HttpServer(board, host="127.0.0.1", token="secret", max_request_bytes=1 << 16,
                    app_factory=create_epoch_board_app) as server:
        with EpochClient(server.url, "wrong", timeout=5.0) as intruder, \
                pytest.raises(ParameterServerError, match="401"):
            intruder.register(0, [0])
        with EpochClient(server.url, "secret", timeout=5.0, retries=0) as client:
            with pytest.raises(ParameterServerError, match="400.*task 3 of 1"):
                client.register(3, [0])
            with pytest.raises(ParameterServerError, match="400.*partitions"):
                client.register(0, [0, 7])
            client.register(0, [0, 1])
            version = board.open(1)
            assert client.next_after(0, wait_s=1.0) == {"version": version, "epoch": 1}
            assert client.report(version, 0, row(0)) == {"counted": True, "why": ""}
            assert not client.report(version, 0, row(0))["counted"]
            with pytest.raises(ParameterServerError, match="400.*fields"):
                client.report(version, 1, {"steps": 1})
            with pytest.raises(ParameterServerError, match="400.*partition 5"):
                client.report(version, 5, row(5))
            client.report(version, 1, row(1))
            assert len(board.collect(version, no_failure)) == 2
            board.stop()
            assert client.next_after(version, wait_s=1.0) == {"stop": True}
