"""The dashboard's door: one-time login codes, the session cookie, and what it does not open."""

import numpy as np
import pytest

from sparkdownpour import optimizers
from sparkdownpour.observe.dashboard import CSP
from sparkdownpour.server import ParameterStore
from sparkdownpour.server.app import create_app
from sparkdownpour.transport.flask_app import BROWSER_AUTH
from sparkdownpour.transport.frames import encode_frame

TOKEN = "s3cret-token"


@pytest.fixture()
def app():
    store = ParameterStore([np.zeros((2, 2), np.float32)], optimizers.get("sgd"))
    return create_app(store, token=TOKEN)


def login(app, client):
    code = app.extensions[BROWSER_AUTH].mint_code()
    return client.get(f"/login?code={code}"), code


def test_nothing_without_token_or_cookie(app):
    client = app.test_client()
    for route in ("/", "/v1/dashboard", "/metrics", "/static/dashboard.js", "/v1/status"):
        assert client.get(route).status_code == 401, route
    assert client.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 401
    forged = app.extensions[BROWSER_AUTH].cookie_name
    client.set_cookie(forged, "not-the-session")
    assert client.get("/").status_code == 401


def test_one_time_code_sets_a_strict_httponly_cookie_and_redirects_without_it(app):
    client = app.test_client()
    resp, code = login(app, client)
    assert resp.status_code == 303 and resp.headers["Location"] == "/"
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert TOKEN not in cookie and code not in cookie  # a separate secret, not the token
    page = client.get("/")
    assert page.status_code == 200 and "<svg" in page.text
    assert page.headers["Content-Security-Policy"] == CSP
    assert code not in page.text and TOKEN not in page.text
    assert client.get("/v1/dashboard").json["sections"]["staleness"].startswith("<svg")
    assert client.get("/metrics").status_code == 200
    assert client.get("/static/dashboard.js").headers["Content-Type"].startswith("text/javascript")
    # The code is spent: a second use (another browser, a leaked log line) is refused.
    again = app.test_client().get(f"/login?code={code}")
    assert again.status_code == 403 and "Set-Cookie" not in again.headers
    assert app.test_client().get("/login").status_code == 403


def test_the_cookie_never_writes(app):
    client = app.test_client()
    login(app, client)
    frame = encode_frame([np.ones((2, 2), np.float32)], kind="update", step=0, replica="x")
    assert client.post("/v1/update", data=frame).status_code == 401
    assert app.test_client().post("/v1/update", data=frame,
                                  headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_the_bearer_token_also_reads_the_dashboard_and_size_limits_stay(app):
    client = app.test_client()
    assert client.get("/", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    login(app, client)
    assert client.get("/", data=b"x" * 10).status_code == 400  # a GET body is still refused


def test_codes_are_bounded_and_each_works_once():
    from sparkdownpour.observe.browser_auth import MAX_OPEN_CODES, BrowserAuth

    auth = BrowserAuth()
    codes = [auth.mint_code() for _ in range(MAX_OPEN_CODES + 2)]
    assert not auth.redeem(codes[0]) and not auth.redeem(codes[1])  # the oldest were dropped
    assert auth.redeem(codes[-1]) and not auth.redeem(codes[-1])
    assert not auth.redeem("") and not auth.redeem(None) and not auth.redeem("x" * 1000)


def test_vector_shard_apps_have_no_browser_door():
    from sparkdownpour.lbfgs.shard_server import create_vector_app
    from sparkdownpour.lbfgs.vectors import VectorShard

    app = create_vector_app(VectorShard(4), token=TOKEN, max_request_bytes=1024)
    assert BROWSER_AUTH not in app.extensions
    assert app.test_client().get("/login?code=x").status_code == 401


def test_sandblaster_iteration_dashboard_server_charts_what_the_coordinator_reports():
    from prometheus_client.parser import text_string_to_metric_families

    from sparkdownpour.observe.dashboard import IterationView
    from sparkdownpour.observe.routes import create_iteration_app

    view = IterationView("Sandblaster run 1234abcd", info={"portions": 8})
    app = create_iteration_app(view, token=TOKEN, max_request_bytes=1024)
    client = app.test_client()
    assert client.get("/").status_code == 401
    login(app, client)
    empty = client.get("/v1/dashboard").json["sections"]
    assert 'data-points="0"' in empty["objective"]
    for i, (f, g) in enumerate([(0.69, 0.3), (0.41, 0.05), (0.40, 0.004)], start=1):
        view.note_record({"iteration": i, "objective": f, "grad_norm": g, "evaluations": 2 * i})
    page = client.get("/").text
    assert "Sandblaster run 1234abcd" in page and 'data-points="3"' in page
    sections = client.get("/v1/dashboard").json["sections"]
    assert "last 0.4" in sections["objective"] and "last 0.004" in sections["grad_norm"]
    metrics = {s.name: s.value for f in text_string_to_metric_families(client.get("/metrics").text)
               for s in f.samples}
    assert metrics["sparkdownpour_lbfgs_iterations_total"] == 3
    assert metrics["sparkdownpour_lbfgs_evaluations_total"] == 6
    assert metrics["sparkdownpour_lbfgs_objective"] == 0.40
    assert client.get("/v1/status").json["iterations"] == 3


def test_labels_from_executors_are_escaped(app):
    store = app.extensions["sparkdownpour.dashboard_view"].store
    store.push([np.ones((2, 2), np.float32)], replica="<script>alert(1)</script>", base_step=0)
    client = app.test_client()
    login(app, client)
    page = client.get("/").text
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)" in page
