"""The Python worker daemon of the sessions this project starts: pyspark's own, importing
pyspark's compiled modules instead of its zipped sources.

Spark starts an executor's Python daemon with ``$SPARK_HOME/python/lib/pyspark.zip`` and py4j's
zip first on ``PYTHONPATH``. Those zips hold sources only, and Python cannot cache bytecode in a
zip, so the daemon and every worker it forks compile each pyspark module they import, every
time: measured on this project's 2-core machine, about 0.3 s of CPU per worker process, paid in
every cold fit (``python jobs/train_digits.py`` starts three). With a pip-installed pyspark those
zips are copies, inside the installed package, of modules pip compiled at install time.

``get_or_create_session`` (its embedded session, or spark-submit's with a local master) and
``local_connect_session`` run this module as ``spark.python.daemon.module`` for a local master
(unless that setting is the user's). It moves
a zip behind the rest of ``sys.path`` only where the installed package is the same code: the
pyspark zip where it lies in the installed pyspark's own ``python/lib``, py4j's where the
installed py4j has the zip's version. A cluster's ``SPARK_HOME`` keeps its zips first. Then it runs
``pyspark.daemon``, whose forked workers inherit the path.

Spark imports the daemon module before anything of a job (``--py-files`` included) is on the
workers' path, and a daemon that fails to start fails every Python UDF of the session, the
user's own too. So the setting is made only after ``ImportCheck`` has seen the executors'
interpreter import this module in a fresh process (about 50 ms: hidden behind the embedded
session's JVM launch; paid before the context under spark-submit and before a local Connect
server starts).

Nothing here may import pyspark before the path is set; ``sparkdownpour``'s ``__init__`` does not.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from importlib.machinery import PathFinder

DAEMON_MODULE = __name__ if __name__ != "__main__" else "sparkdownpour.worker_daemon"
SETTING = "spark.python.daemon.module"

_PY4J_ZIP = re.compile(r"py4j-(?P<version>[0-9][0-9.]*)-src\.zip$")


def _installed_dir(package: str, path: list[str]) -> str | None:
    """Where ``package`` is installed on ``path`` (a package directory), without importing it."""
    spec = PathFinder.find_spec(package, path)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    return os.path.realpath(locations[0]) if locations else None


def _py4j_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        return distribution("py4j").version
    except PackageNotFoundError:
        return None


def redundant_zips(path: list[str]) -> list[str]:
    """The entries of ``path`` that are zips of the same pyspark and py4j installed elsewhere on it."""
    zips = [entry for entry in path if entry.endswith(".zip")]
    if not zips:
        return []
    rest = [entry for entry in path if entry not in zips]
    pyspark_dir = _installed_dir("pyspark", rest)
    if pyspark_dir is None:
        return []
    own_lib = os.path.join(pyspark_dir, "python", "lib")
    moved = []
    for entry in zips:
        real = os.path.realpath(entry)
        if os.path.dirname(real) != own_lib:
            continue  # another installation's zip (a cluster's SPARK_HOME): it stays first
        if os.path.basename(real) == "pyspark.zip" or _same_py4j(real, rest):
            moved.append(entry)
    return moved


def _same_py4j(zip_path: str, path: list[str]) -> bool:
    """True where ``zip_path`` is py4j's zip and the py4j installed on ``path`` has its version."""
    match = _PY4J_ZIP.search(zip_path)
    return bool(match) and _installed_dir("py4j", path) is not None and \
        _py4j_version() == match["version"]


def prefer_installed_modules(path: list[str]) -> list[str]:
    """``path`` with ``redundant_zips`` moved to its end (kept, in case a module is only there)."""
    moved = redundant_zips(path)
    return [entry for entry in path if entry not in moved] + moved


class ImportCheck:
    """Whether ``python`` (the executors' interpreter) imports this module as Spark will start
    it: a fresh process, this environment, not this process's runtime ``sys.path`` additions,
    nor its working directory (a local-cluster executor's is another)."""

    def __init__(self, python: str | None = None) -> None:
        python = python or os.environ.get("PYSPARK_PYTHON") or sys.executable
        try:
            self._process: subprocess.Popen | None = subprocess.Popen(
                [python, "-c", f"import {DAEMON_MODULE}"], cwd=tempfile.gettempdir(),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except OSError:
            self._process = None

    def passed(self, timeout: float = 30.0) -> bool:
        if self._process is None:
            return False
        try:
            return self._process.wait(timeout) == 0
        except subprocess.TimeoutExpired:
            self._process.kill()
            return False


def daemon_check(master: str, conf: dict | None) -> ImportCheck | None:
    """An ``ImportCheck`` (started) for a session on ``master``: None for a cluster master, or
    where ``conf`` names a daemon module of its own (the user's wins)."""
    if not master.startswith("local") or (conf or {}).get(SETTING):
        return None
    return ImportCheck((conf or {}).get("spark.pyspark.python"))


def daemon_setting(check: ImportCheck | None) -> dict:
    """``{SETTING: this module}`` where ``check`` (``daemon_check``; None: not run) saw the
    executors' interpreter import it, else nothing."""
    return {SETTING: DAEMON_MODULE} if check is not None and check.passed() else {}


def main() -> None:
    sys.path[:] = prefer_installed_modules(sys.path)
    from pyspark.daemon import manager

    manager()


if __name__ == "__main__":
    main()
