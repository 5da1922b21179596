"""transport.child_process: children are fresh interpreters that load only the library."""

import os
import signal
import sys
import types

import pytest

from sparkdownpour.transport.child_process import ServerProcess

pytestmark = pytest.mark.timeout(60)


def _empty_store():
    from sparkdownpour.server.app import create_app
    from sparkdownpour.server.store import ParameterStore
    from tests.server.conftest import PlainSGD, zeros

    return ParameterStore(zeros(), PlainSGD()), create_app


def _process(factory, **kwargs):
    return ServerProcess(factory, host="127.0.0.1", token="t" * 24, max_request_bytes=1 << 20,
                         commands=("step", "status"), **kwargs)


def test_a_child_is_a_fresh_interpreter_that_never_imports_main_and_ignores_ctrl_c():
    with _process(_empty_store) as child:
        assert child.call("step") == 0
        with open(f"/proc/{child.pid}/cmdline", "rb") as handle:
            argv = handle.read().split(b"\0")
        assert argv[0] == sys.executable.encode() and argv[1] == b"-c"
        assert b"sparkdownpour.transport.child_process import main" in argv[2]
        os.kill(child.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the process group
        assert child.call("step") == 0  # the parent decides when its children stop
        process = child.process
    assert not process.is_alive() and process.exitcode == 0


def test_a_factory_the_child_cannot_import_fails_the_start_with_the_reason():
    ghost = types.ModuleType("sdp_ghost_module")  # importable here only: not on any path
    exec("def factory():\n    raise AssertionError('never run')\n", ghost.__dict__)
    sys.modules["sdp_ghost_module"] = ghost
    try:
        child = _process(ghost.factory)
        with pytest.raises(OSError, match="could not start its server: cannot load what the "
                                          "parent sent: ModuleNotFoundError.*sdp_ghost_module"):
            child.__enter__()
        assert child.process is None
    finally:
        del sys.modules["sdp_ghost_module"]
