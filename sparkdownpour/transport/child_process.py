"""A server whose store lives in its own child process, so its updates use another core.

Python threads share one interpreter lock: N shards served by threads of one process apply
their updates one at a time. A ``ServerProcess`` runs ``factory(*args) -> (store,
app_factory)`` in a child process and serves it with the same ``HttpServer`` (token, size
limit, keep-alive, TLS). The parent learns the port through a pipe and stops the child by
closing it; a child whose pipe closes (its driver died) stops serving and exits.

The child is a fresh interpreter running only this module (``python -c`` importing
``child_process`` with the parent's ``sys.path``), never a fork of a driver that runs a JVM
gateway and threads, and never an import of the user's ``__main__``: multiprocessing's
``spawn`` re-imports the parent's main script in every child, so a script without an
``if __name__ == "__main__":`` guard would run again (a second Spark application and
training run) inside each shard. The pipe is one end of an unnamed socket pair, inherited
as a file descriptor whose number is the child's only argument.

The same pipe carries the driver's own calls on the child's store (``call``): epochs,
status, checkpoints, the final parameters. Only the attribute paths listed in ``commands``
are answered. What travels on it (``factory`` and ``args`` by cloudpickle, so a rule defined
in the user's script travels by value; the calls and their answers by pickle) goes between
the driver and its own child and never comes from the network; replicas reach the child
only over its authenticated HTTP routes.
"""

from __future__ import annotations

import ctypes
import json
import operator
import pickle
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Collection
from multiprocessing.connection import Connection
from typing import Any

import cloudpickle

from sparkdownpour.errors import ParameterServerError

__all__ = ["ChildProcess", "ServerProcess", "keep_freed_buffers", "main"]

# Exception types a call may raise in the parent as themselves; any other becomes a
# RuntimeError naming its type.
_RAISED_AS_IS = {e.__name__: e for e in (ValueError, TypeError, KeyError, RuntimeError)}


def keep_freed_buffers() -> bool:
    """Keep freed multi-megabyte buffers in this process's heap instead of returning them to
    the OS (glibc ``mallopt``; False where it is not available).

    Every round trip allocates a few frame-sized buffers; with glibc's defaults each is
    mmapped fresh (or the heap top trimmed after the request), so the next one page-faults
    all of it in again, which costs more than the copies themselves. Process-wide: only a
    process that exists to serve (a shard child) or an entry point may do it, never library
    code running in a user's process. The price: up to about 320 MB of freed heap stays
    mapped in that process.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    ok = libc.mallopt(m_mmap_threshold, 32 << 20)  # glibc's maximum; also freezes it
    ok &= libc.mallopt(m_trim_threshold, 256 << 20)
    ok &= libc.mallopt(m_top_pad, 64 << 20)
    return bool(ok)


def _serve(factory: Callable, args: tuple, host: str, port: int, token: str,
           max_request_bytes: int, tls: tuple[str, str] | None, commands: frozenset,
           conn) -> None:
    from sparkdownpour.transport.http_server import HttpServer, tls_context

    keep_freed_buffers()  # this process exists only to serve: its heap is ours to tune
    try:
        store, app_factory = factory(*args)
        server = HttpServer(store, host=host, port=port, token=token,
                            max_request_bytes=max_request_bytes, app_factory=app_factory,
                            ssl_context=tls_context(*tls) if tls else None).start()
    except Exception as e:  # e.g. the port is taken: tell the parent why, then exit
        conn.send(("failed", f"{type(e).__name__}: {e}"))
        return
    try:
        conn.send(("ready", server.port))
        _answer(store, commands, conn)
    finally:
        server.stop()


# What the child runs: the parent's sys.path (so the library and whatever the factory's
# arguments need resolve as they do in the parent), then this module's ``main``.
_BOOTSTRAP = ("import json, sys; sys.path[:] = json.loads(sys.argv[2]); "
              "from sparkdownpour.transport.child_process import main; main(int(sys.argv[1]))")


def main(fd: int) -> None:
    """The child's entry point: serve what the parent sends on the inherited pipe ``fd``.

    The first message is the cloudpickled ``(factory, args, host, port, token,
    max_request_bytes, tls, commands)``; then ``_serve`` answers until the pipe closes.
    """
    # Ctrl-C in a terminal reaches the whole process group: the parent decides when its
    # children stop (it closes their pipes), so one keystroke does not kill them mid-call.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn = Connection(fd)
    # Imported before the payload is read: N children import at once while the parent
    # is still sending to the first ones.
    import sparkdownpour.transport.http_server  # noqa: F401

    try:
        payload = pickle.loads(conn.recv_bytes())
    except (EOFError, OSError):
        return  # the parent went away before it sent anything
    except Exception as e:  # e.g. a module the factory needs is not importable here
        conn.send(("failed", f"cannot load what the parent sent: {type(e).__name__}: {e}"))
        return
    if not isinstance(payload, tuple):  # "stop" before the start was sent: nothing to do
        return
    try:
        _serve(*payload, conn)
    finally:
        conn.close()


class ChildProcess:
    """The ``subprocess.Popen`` of a child, with ``multiprocessing.Process``'s names:
    ``pid``, ``exitcode`` (``-N`` when killed by signal N), ``is_alive``, ``join``,
    ``terminate``, ``kill``."""

    def __init__(self, popen: subprocess.Popen) -> None:
        self.popen = popen

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def exitcode(self) -> int | None:
        return self.popen.poll()

    def is_alive(self) -> bool:
        return self.popen.poll() is None

    def join(self, timeout: float | None = None) -> None:
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pass

    def terminate(self) -> None:
        if self.is_alive():
            self.popen.terminate()

    def kill(self) -> None:
        if self.is_alive():
            self.popen.kill()


def start_child(payload: bytes, name: str) -> tuple[ChildProcess, Connection, threading.Thread]:
    """Start ``python -c _BOOTSTRAP`` with one end of a socket pair as an inherited
    descriptor, and send it ``payload`` from a thread (so N children start at once).
    Returns the child, the parent's end of the pipe and the sending thread."""
    parent_sock, child_sock = socket.socketpair()
    try:
        fd = child_sock.fileno()
        path = json.dumps([str(entry) for entry in sys.path])
        popen = subprocess.Popen([sys.executable, "-c", _BOOTSTRAP, str(fd), path],
                                 pass_fds=(fd,), stdin=subprocess.DEVNULL, close_fds=True)
    except BaseException:
        parent_sock.close()
        raise
    finally:
        child_sock.close()
    conn = Connection(parent_sock.detach())

    def send() -> None:
        try:
            conn.send_bytes(payload)
        except (OSError, ValueError):  # the child died first (wait_ready says so) or closed
            pass

    sender = threading.Thread(target=send, name=f"{name}-start", daemon=True)
    sender.start()
    return ChildProcess(popen), conn, sender


def _answer(store: Any, commands: frozenset, conn) -> None:
    """Answer ``(path, args)`` calls until the parent says ``"stop"`` or goes away."""
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message == "stop":
            return
        path, args = message
        try:
            if path not in commands:
                raise KeyError(f"{path!r} is not a command of this server process")
            value = operator.attrgetter(path)(store)
            conn.send(("ok", value(*args) if callable(value) else value))
        except Exception as e:
            conn.send(("error", type(e).__name__, str(e)))


class ServerProcess:
    """Context manager with the ``url`` of a server running in a child process.

    ``port`` 0 takes a free one; ``tls`` is ``(cert_file, key_file)`` for HTTPS (the context
    is built in the child: an ``ssl.SSLContext`` cannot cross processes); ``commands`` are
    the attribute paths of the store that ``call`` may use.
    """

    def __init__(self, factory: Callable[..., tuple[Any, Callable]], args: tuple = (), *,
                 host: str, token: str, max_request_bytes: int, port: int = 0,
                 tls: tuple[str, str] | None = None, commands: Collection[str] = (),
                 start_timeout: float = 60.0, call_timeout: float = 300.0,
                 name: str = "sparkdownpour-shard") -> None:
        self.factory, self.args = factory, args
        self.host, self.token, self.requested_port = host, token, port
        self.max_request_bytes, self.start_timeout = max_request_bytes, start_timeout
        self.call_timeout = call_timeout
        self.tls, self.commands, self.name = tls, frozenset(commands), name
        self.process = None
        self._conn = None
        self._lock = threading.Lock()  # one call at a time on the pipe
        self._sender: threading.Thread | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def call(self, path: str, *args: Any) -> Any:
        """``store.<path>(*args)`` (or the attribute's value) in the child, answered by pipe."""
        with self._lock:
            if self._conn is None:
                raise ParameterServerError(f"{self.name} is not running")
            try:
                self._conn.send((path, args))
                if not self._conn.poll(self.call_timeout):
                    # A late answer would be read as the next call's: this pipe is done.
                    self._conn.close()
                    self._conn = None
                    raise ParameterServerError(f"{self.name} (pid {self.pid}) did not answer "
                                               f"{path} within {self.call_timeout} s")
                answer = self._conn.recv()
            except (EOFError, OSError) as e:
                if self.process is not None:
                    self.process.join(1)  # reap it, so its exit code is known
                code = self.process.exitcode if self.process is not None else None
                raise ParameterServerError(
                    f"{self.name} (pid {self.pid}) stopped answering the driver (exit code "
                    f"{code}): {type(e).__name__}") from None
        if answer[0] == "ok":
            return answer[1]
        _, kind, message = answer
        raise _RAISED_AS_IS.get(kind, RuntimeError)(
            message if kind in _RAISED_AS_IS else f"{kind}: {message}")

    def launch(self) -> None:
        """Start the child without waiting for it (``wait_ready``): N shards start at once.
        The child is a fresh interpreter that imports only the library (``main``)."""
        payload = cloudpickle.dumps(
            (self.factory, self.args, self.host, self.requested_port, self.token,
             self.max_request_bytes, self.tls, self.commands), protocol=pickle.HIGHEST_PROTOCOL)
        self.process, self._conn, self._sender = start_child(payload, self.name)
        self.args = ()  # the child gets its copy (e.g. a shard's initial arrays)

    def wait_ready(self) -> ServerProcess:
        """Wait for the launched child's port; on any failure stop it and raise."""
        parent = self._conn
        try:
            ready = parent.poll(self.start_timeout)
            answer = parent.recv() if ready else None
        except (EOFError, OSError):
            self.process.join(5)
            code = self.process.exitcode
            pid = self.pid
            self.__exit__()
            raise RuntimeError(f"{self.name} (pid {pid}) exited while starting (exit code "
                               f"{code})") from None
        if answer is None:
            self.__exit__()
            raise RuntimeError(f"{self.name} did not start within {self.start_timeout} s")
        kind, detail = answer
        if kind != "ready":
            self.__exit__()
            raise OSError(f"{self.name} could not start its server: {detail}")
        self._sender.join()
        self._sender = None
        self.port = detail
        return self

    def __enter__(self) -> ServerProcess:
        self.launch()
        return self.wait_ready()

    def __exit__(self, *exc: object) -> None:
        # Not under the call lock: a call stuck on a hung child must not block the stop.
        conn, self._conn = self._conn, None
        sender, self._sender = self._sender, None
        if sender is not None and sender.is_alive() and self.process is not None:
            # Still sending the start (a child that hangs while starting): never interleave a
            # "stop" with it, nor close the pipe under the sending thread.
            self.process.kill()
            sender.join(5)
        if conn is not None:
            try:
                conn.send("stop")
            except OSError:
                pass
            conn.close()
        if self.process is not None:
            self.process.join(10)
            if self.process.is_alive():
                self.process.terminate()
                self.process.join(5)
            if self.process.is_alive():
                self.process.kill()
                self.process.join(5)
            self.process = None
