"""How ``transform`` gets a fitted model's ``.keras`` bytes to the executors without
``SparkContext.broadcast`` (which Spark Connect lacks).

Up to ``CLOSURE_LIMIT_BYTES`` the bytes ride inside the UDF's closure: Spark ships a stage's
task closure once per executor (as a broadcast of its own), in classic and Connect sessions
alike. Beyond it (a Connect plan has a size cap, and a big closure slows planning) the driver
writes the bytes once per model digest to a file the executors read: under the directory set
by the Spark setting ``PAYLOAD_DIR_CONF`` (any file system pyarrow opens: a local path on a
shared volume, ``hdfs://``, ``s3://``, ``gs://``), or a local temporary directory when the
executors run on this machine. Either way the worker builds the model once per digest
(``ml.predict``); the bytes are checked against the digest before they are used.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import tempfile

__all__ = ["CLOSURE_LIMIT_BYTES", "FromFile", "InClosure", "PAYLOAD_DIR_CONF", "payload_source"]

CLOSURE_LIMIT_BYTES = 32 * 2**20
PAYLOAD_DIR_CONF = "spark.sparkdownpour.transform.payloadDir"


class InClosure:
    """The bytes themselves, as ``value`` (like ``FromFile``)."""

    __slots__ = ("value",)

    def __init__(self, payload: bytes) -> None:
        self.value = payload


class FromFile:
    """A path to the bytes (read on first use by each Python worker, checked by digest)."""

    __slots__ = ("path", "digest")

    def __init__(self, path: str, digest: str) -> None:
        self.path, self.digest = path, digest

    @property
    def value(self) -> bytes:
        from pyarrow import fs

        filesystem, path = fs.FileSystem.from_uri(self.path) if "://" in self.path \
            else (fs.LocalFileSystem(), self.path)
        with filesystem.open_input_stream(path) as stream:
            payload = stream.read()
        if hashlib.sha256(payload).hexdigest() != self.digest:
            raise RuntimeError(f"the model file {self.path} does not hold the model it was "
                               "written for (changed or truncated since); run transform again")
        return payload


_LOCAL_DIR: list[str] = []


def _local_dir() -> str:
    if not _LOCAL_DIR:
        folder = tempfile.mkdtemp(prefix="sparkdownpour-models-")
        atexit.register(shutil.rmtree, folder, True)
        _LOCAL_DIR.append(folder)
    return _LOCAL_DIR[0]


def payload_source(spark, payload: bytes, digest: str, *, limit: int | None = None):
    """``InClosure`` for a model up to ``limit`` bytes (default ``CLOSURE_LIMIT_BYTES``), else
    ``FromFile`` (the file written if not there yet)."""
    limit = CLOSURE_LIMIT_BYTES if limit is None else limit
    if len(payload) <= limit:
        return InClosure(payload)
    from pyarrow import fs

    from sparkdownpour.session import conf_value, driver_address

    directory = conf_value(spark, PAYLOAD_DIR_CONF)
    if not directory:
        if driver_address(spark) != "127.0.0.1":
            raise ValueError(
                f"the model is {len(payload) / 2**20:.0f} MiB, over the {limit / 2**20:.0f} MiB "
                f"that travel inside the UDF's closure; set the Spark setting "
                f"{PAYLOAD_DIR_CONF} to a directory every executor can read (a shared volume, "
                "hdfs://..., s3://...) where transform writes the model once")
        directory = _local_dir()
    path = f"{directory.rstrip('/')}/{digest}.keras"
    filesystem, inner = fs.FileSystem.from_uri(path) if "://" in path \
        else (fs.LocalFileSystem(), os.path.abspath(path))
    if filesystem.get_file_info(inner).type == fs.FileType.NotFound:
        filesystem.create_dir(inner.rsplit("/", 1)[0], recursive=True)
        with filesystem.open_output_stream(inner + ".part") as stream:
            stream.write(payload)
        filesystem.move(inner + ".part", inner)
    return FromFile(path if "://" in path else inner, digest)
