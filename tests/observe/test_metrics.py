"""GET /metrics: Prometheus text that prometheus-client's own parser reads, matching /v1/status."""

import json
import urllib.error
import urllib.request

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sparkdownpour import optimizers
from sparkdownpour.server import ParameterServer, ParameterStore
from sparkdownpour.server.client import ParameterClient
from sparkdownpour.server.ledger import Position


def get(server, route, token=None):
    headers = {"Authorization": f"Bearer {server.token if token is None else token}"}
    with urllib.request.urlopen(urllib.request.Request(server.url + route, headers=headers),
                                timeout=10) as resp:
        return resp.headers, resp.read().decode()


def samples(text):
    """{(sample name, frozenset(labels)): value} from the parsed exposition."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def new_store():
    return ParameterStore([np.zeros((4, 3), np.float32), np.zeros(3, np.float32)],
                          optimizers.get("sgd", learning_rate=0.1))


def test_metrics_parse_and_match_the_status_route():
    store = new_store()
    store.open_epoch(1)
    grads = [np.ones((4, 3), np.float32), np.ones(3, np.float32)]
    with ParameterServer(store) as server, ParameterClient(server.url, server.token) as client:
        for i in range(5):
            step, _ = client.fetch()
            client.push(grads, base_step=max(0, step - i % 3), replica=f"r{i % 2}",
                        position=Position(1, i % 2, i // 2, i // 2 + 1, 0), report={"loss": 1.0})
        # The same position again: refused as a duplicate, counted under its reason.
        client.push(grads, base_step=0, replica="r0", position=Position(1, 0, 0, 1, 0))
        # A malformed frame: rejected before the store.
        bad = urllib.request.Request(server.url + "/v1/update", data=b"garbage", method="POST",
                                     headers={"Authorization": f"Bearer {server.token}"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(bad, timeout=10)
        assert refused.value.code == 400
        headers, text = get(server, "/metrics")
        status = json.loads(get(server, "/v1/status")[1])
    assert headers["Content-Type"].startswith("text/plain")
    m = samples(text)
    assert status["updates_applied"] == 5
    assert m[("sparkdownpour_updates_applied_total", frozenset())] == status["updates_applied"]
    assert m[("sparkdownpour_updates_rejected_total", frozenset())] == status["updates_rejected"] == 1
    for reason, n in status["refused"].items():
        assert m[("sparkdownpour_updates_refused_total", frozenset({("reason", reason)}))] == n
    assert status["refused"]["duplicate"] == 1
    assert m[("sparkdownpour_received_bytes_total", frozenset())] == status["bytes_in"] > 0
    assert m[("sparkdownpour_sent_bytes_total", frozenset())] == status["bytes_out"] > 0
    assert m[("sparkdownpour_step", frozenset())] == status["step"]
    stale = status["staleness"]
    assert m[("sparkdownpour_staleness_count", frozenset())] == status["updates_applied"]
    assert m[("sparkdownpour_staleness_sum", frozenset())] == pytest.approx(
        stale["mean"] * status["updates_applied"])
    assert m[("sparkdownpour_staleness_max", frozenset())] == stale["max"]
    zero = stale["histogram"].get("0", 0)
    assert m[("sparkdownpour_staleness_bucket", frozenset({("le", "0")}))] == zero
    for replica, n in status["replicas"].items():
        assert m[("sparkdownpour_replica_updates_total", frozenset({("replica", replica)}))] == n
    # Latency: one observation per successful fetch and push (the refused push answered 409).
    assert m[("sparkdownpour_request_seconds_count", frozenset({("op", "fetch")}))] == 5
    assert m[("sparkdownpour_request_seconds_count", frozenset({("op", "push")}))] == 5


def test_metrics_need_the_token_and_servers_do_not_share_a_registry():
    with ParameterServer(new_store()) as one, ParameterServer(new_store()) as two, \
            ParameterClient(one.url, one.token) as client:
        client.push([np.ones((4, 3)), np.ones(3)], base_step=0, replica="a")
        for token in ("", "wrong"):
            with pytest.raises(urllib.error.HTTPError) as e:
                get(one, "/metrics", token=token)
            assert e.value.code == 401
        first = samples(get(one, "/metrics")[1])
        second = samples(get(two, "/metrics")[1])
    assert first[("sparkdownpour_updates_applied_total", frozenset())] == 1
    assert second[("sparkdownpour_updates_applied_total", frozenset())] == 0


def test_per_shard_and_device_families_from_a_status_that_has_them():
    from sparkdownpour.observe.metrics import downpour_families

    shard = {"updates_applied": 3, "bytes_in": 10, "bytes_out": 20,
             "staleness": {"mean": 1.0, "max": 2, "histogram": {"0": 1, "1": 1, "2": 1}}}
    status = {"updates_applied": 3, "step": 6, "bytes_in": 20, "bytes_out": 40,
              "staleness": shard["staleness"], "devices": {"p0-a0": "GPU:0"},
              "shards": [shard, dict(shard, updates_applied=2)]}
    from prometheus_client import CollectorRegistry, generate_latest

    from sparkdownpour.observe.metrics import _Families

    registry = CollectorRegistry()
    registry.register(_Families(downpour_families(lambda: status)))
    m = samples(generate_latest(registry).decode())
    assert m[("sparkdownpour_shard_updates_applied_total", frozenset({("shard", "1")}))] == 2
    assert m[("sparkdownpour_shard_staleness_count", frozenset({("shard", "0")}))] == 3
    assert m[("sparkdownpour_replica_device", frozenset({("replica", "p0-a0"),
                                                         ("device", "GPU:0")}))] == 1


def test_a_token_file_gives_prometheus_a_fixed_credential(tmp_path):
    from sparkdownpour.config import DownpourConfig
    from sparkdownpour.observe.links import read_token_file

    path = tmp_path / "token"
    path.write_text("a-long-enough-scrape-token-1234\n")
    token = read_token_file(path)
    assert token == "a-long-enough-scrape-token-1234"
    with ParameterServer(new_store(), token=token) as server:
        assert "sparkdownpour_updates_applied_total 0.0" in get(server, "/metrics", token)[1]
    path.write_text("short\n")
    with pytest.raises(ValueError, match="at least 16 characters"):
        read_token_file(path)
    with pytest.raises(ValueError, match="cannot read token_file"):
        read_token_file(tmp_path / "missing")
    assert DownpourConfig(server_port=9400, token_file=str(path)).server_port == 9400
    with pytest.raises(ValueError, match="server_port must be in 0..65535"):
        DownpourConfig(server_port=70000)
