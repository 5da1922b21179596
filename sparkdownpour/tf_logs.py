"""Keep TensorFlow's C++ start-up lines out of a normal run, on the driver and on executors.

Importing TensorFlow prints, from C++ and straight to file descriptor 2, lines such as
``I0000 ... oneDNN custom operations are on``, ``Could not find cuda drivers`` and, on a
machine without a GPU, ``failed call to cuInit: INTERNAL: CUDA error``. Most come before absl's
logging is initialised, so ``TF_CPP_MIN_LOG_LEVEL`` alone does not stop them. ``install()``
(called when ``sparkdownpour`` is imported, in the driver and in every Python worker that runs a
replica, before either imports TensorFlow) therefore

- sets ``TF_CPP_MIN_LOG_LEVEL=3`` unless it is set already (later C++ logs: errors only), and
- wraps the first ``import tensorflow`` of the process: what it writes to file descriptor 2 is
  held back, and written out again without absl's formatted lines (``I0000 hh:mm:ss ...``).

``SPARKDOWNPOUR_TF_LOG=1`` (on executors: ``spark.executorEnv.SPARKDOWNPOUR_TF_LOG=1``) brings
all of TensorFlow's lines back, for debugging a device or a build.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import re
import sys
import tempfile

__all__ = ["ENV", "install", "strip_start_up_lines"]

ENV = "SPARKDOWNPOUR_TF_LOG"
# absl's prefix (severity, month+day, time, thread, file:line]; before InitializeLog the time
# reads 00:00:<seconds since the epoch>) and the notice it writes before InitializeLog.
_ABSL_LINE = re.compile(rb"^[IWE]\d{4} \d\d:\d\d:[\d.]+ +\d+ [\w.]+:\d+\] ")
_PRE_INIT = b"WARNING: All log messages before absl::InitializeLog() is called"


def strip_start_up_lines(text: bytes) -> bytes:
    """``text`` without absl's formatted log lines and its pre-initialisation notice."""
    kept = [line for line in text.splitlines(keepends=True)
            if not (_ABSL_LINE.match(line) or line.startswith(_PRE_INIT))]
    return b"".join(kept)


def install() -> None:
    """Quiet TensorFlow's start-up in this process, unless ``SPARKDOWNPOUR_TF_LOG`` is set or
    TensorFlow is imported already."""
    if os.environ.get(ENV, "") not in ("", "0") or "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if not any(isinstance(f, _QuietFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietFinder())


class _QuietFinder(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` as usual and hands back a loader that runs it quietly (once)."""

    def find_spec(self, name, path, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # only the first import; the rest of TF loads as usual
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _QuietLoader(spec.loader)
        return spec


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader) -> None:
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        sys.stderr.flush()
        with tempfile.TemporaryFile() as held:
            saved = os.dup(2)
            os.dup2(held.fileno(), 2)
            try:
                self._loader.exec_module(module)
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                os.close(saved)
                held.seek(0)
                rest = strip_start_up_lines(held.read())
                if rest:
                    os.write(2, rest)

    def __getattr__(self, name):  # get_code, is_package, resource readers, ...
        return getattr(self._loader, name)
