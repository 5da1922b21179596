"""A class-data-sharing archive of Spark's classes, for the embedded session's driver JVM.

Starting the embedded session's JVM loads and verifies some sixteen thousand classes, most of its
CPU time in a short script. Java can map classes it loaded once from an archive instead (AppCDS):
measured on this project's 2-core machine, a session started in 2.5 s instead of 4.6 s, and
start-up plus a few small jobs took 9-10 instead of 14 CPU-seconds. Java 17 makes no archive by
itself, so, for each Java binary and pyspark install:

1. A session that finds no archive and no class list has its JVM write the list of the classes
   it loads (``-XX:DumpLoadedClassList``: names only, costs nothing measurable). Once the JVM is
   up, a note beside the list says its pid, Java and class path.
2. A later session that finds a list whose JVM has exited starts a builder, detached and at the
   lowest priority (``nice 19``), and goes on without waiting: the builder dumps the archive
   (``java -Xshare:dump``, about 35 CPU-seconds and 190 MB), checks that a JVM starts with it
   (``-Xshare:on``; a file cut short would crash a JVM that maps it), and only then gives it the
   archive's name.
3. Sessions from then on start with ``-XX:SharedArchiveFile`` (a stale one is ignored:
   ``-Xshare:auto``).

The cache is ``$SPARKDOWNPOUR_JVM_CACHE``, else ``$XDG_CACHE_HOME/sparkdownpour/jvm``, else
``~/.cache/sparkdownpour/jvm``; ``SPARKDOWNPOUR_JVM_ARCHIVE=0`` turns all of this off. Nothing is
built where the disk has less than ``MIN_FREE_BYTES`` free, a build deletes the archives of
other installs that no session has used for 30 days, and what a killed builder left is deleted
by the next session that looks for a list (``clean_dead_builds``). A local Spark Connect
server's JVM (``session.local_connect_session``) lists and maps the same archive. A JVM
trusts its archive as it trusts its jars, so the folder must be the user's own and writable
by nobody else (it is made ``0700``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

logger = logging.getLogger(__name__)

ENV_SWITCH = "SPARKDOWNPOUR_JVM_ARCHIVE"
ENV_CACHE = "SPARKDOWNPOUR_JVM_CACHE"
MIN_FREE_BYTES = 2 << 30
QUIET = "-Xlog:cds=off -Xlog:cds+dynamic=off"  # CDS warnings go to stdout otherwise
BUILD_TIMEOUT_S = 900
UNUSED_S = 30 * 86400  # another install's archive unused this long is deleted by the next build
# A class list with no note this old: its JVM died before it was up (the note is written then).
ORPHAN_LIST_S = 3600

_listing: Path | None = None  # the class list this process's JVM writes


def cache_dir() -> Path:
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sparkdownpour" / "jvm"


def archive_key() -> str | None:
    """What an archive is valid for: the java binary spark-class runs and this pyspark's jars."""
    import pyspark

    home = os.environ.get("JAVA_HOME")
    java = os.path.join(home, "bin", "java") if home else shutil.which("java")
    jars = Path(pyspark.__file__).parent / "jars"
    if not java or not os.path.exists(java) or not jars.is_dir():
        return None
    java = os.path.realpath(java)
    facts = [java, str(os.stat(java).st_mtime_ns), pyspark.__version__, str(jars),
             str(jars.stat().st_mtime_ns), str(len(list(jars.iterdir())))]
    return hashlib.sha256("\n".join(facts).encode()).hexdigest()[:16]


def archive_state() -> str:
    """This Java and pyspark install's archive: ``"ready"``, ``"building"``, ``"missing"`` (a
    later session lists or builds it), or ``"off"`` (none is made here)."""
    if os.environ.get(ENV_SWITCH, "1") == "0" or (key := archive_key()) is None:
        return "off"
    folder = cache_dir()
    if any(c.isspace() for c in str(folder)):
        return "off"  # as java_options: spark-submit would split the option
    if (folder / f"spark-{key}.jsa").is_file():
        return "ready"
    return "building" if _alive(folder / f"spark-{key}.building") else "missing"


def java_options() -> str:
    """The driver JVM's options: map the archive, or list the classes for one, or nothing."""
    global _listing
    if os.environ.get(ENV_SWITCH, "1") == "0" or (key := archive_key()) is None:
        return ""
    folder = cache_dir()
    if any(c.isspace() for c in str(folder)):
        return ""  # spark-submit splits the Java options at spaces
    archive = folder / f"spark-{key}.jsa"
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if folder.stat().st_mode & 0o022 or folder.stat().st_uid != os.getuid():
            return ""  # the JVM trusts an archive as its own code: only from a private folder
        if archive.is_file():
            os.utime(archive)  # last used now: kept by prune_unused
            return f"-XX:SharedArchiveFile={archive} -Xshare:auto {QUIET}"
        if shutil.disk_usage(folder).free < MIN_FREE_BYTES or _start_builder(folder, key):
            return ""
        if _alive(folder / f"spark-{key}.building") or list(folder.glob(f"spark-{key}.*.json")):
            return ""  # a build or a listing JVM is under way
    except OSError as e:  # a read-only home: no archive, nothing else changes
        logger.debug("no JVM archive: %s", e)
        return ""
    _listing = folder / f"spark-{key}.{uuid.uuid4().hex[:8]}.classlist"
    return f"-XX:DumpLoadedClassList={_listing}"


def note_listing_jvm(jvm) -> None:
    """Once this process's JVM (``jvm``: its py4j view) is up: note beside its class list what
    a builder needs (once; a no-op unless ``java_options`` asked this process's JVM for a list)."""
    global _listing
    if _listing is None:
        return
    system = jvm.java.lang.System
    note = {"pid": int(jvm.java.lang.ProcessHandle.current().pid()),
            "class_path": system.getProperty("java.class.path"),
            "java_home": system.getProperty("java.home")}
    try:
        _listing.with_suffix(".json").write_text(json.dumps(note))
    except OSError as e:
        logger.debug("JVM archive: %s", e)
    _listing = None


def _start_builder(folder: Path, key: str) -> bool:
    """Start a detached builder for a class list whose JVM has exited; True if one started."""
    marker = folder / f"spark-{key}.building"
    if _alive(marker):
        return False  # one build at a time; its archive serves every list
    clean_dead_builds(folder, key)
    for note_path in sorted(folder.glob(f"spark-{key}.*.json")):
        try:
            note = json.loads(note_path.read_text())
        except ValueError:
            note_path.unlink(missing_ok=True)
            continue
        if _pid_alive(int(note["pid"])):
            continue
        listing = note_path.with_suffix(".classlist")
        if not listing.exists():  # its JVM died before writing one
            note_path.unlink(missing_ok=True)
            continue
        os.replace(note_path, note_path.with_suffix(".taken"))  # one builder per list
        os.utime(note_path.with_suffix(".taken"))  # taken now: see clean_dead_builds
        child = subprocess.Popen(
            [sys.executable, "-m", "sparkdownpour.jvm_archive", str(note_path.with_suffix(".taken")),
             str(folder / f"spark-{key}.jsa")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, cwd=folder)
        marker.write_text(str(child.pid))
        return True
    return False


def clean_dead_builds(folder: Path, key: str, orphan_s: float = ORPHAN_LIST_S) -> list[Path]:
    """Delete what a killed builder (SIGKILL, a reboot: its ``finally`` never ran) or a listing
    JVM that died before its note left behind: the taken note, its class list (~0.7 MB) and
    half-written archive (up to ~190 MB), and class lists with no note older than
    ``orphan_s``. Called only while no builder runs; a note taken in the last minute is left
    alone (its builder may be starting, its marker not yet written). The files deleted."""
    marker = folder / f"spark-{key}.building"
    dead = [p for p in folder.glob(f"spark-{key}.*.taken") if time.time() - p.stat().st_mtime > 60]
    dead += [p.with_suffix(suffix) for p in dead for suffix in (".classlist", ".partial")]
    for listing in folder.glob(f"spark-{key}.*.classlist"):
        noted = listing.with_suffix(".json").exists() or listing.with_suffix(".taken").exists()
        if not noted and time.time() - listing.stat().st_mtime > orphan_s:
            dead += [listing, listing.with_suffix(".partial")]
    removed = []
    for path in [*dead, marker]:
        if path.exists():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def build(taken: Path, archive: Path) -> bool:
    """The builder: dump the archive from the class list, check it, give it its name."""
    note = json.loads(taken.read_text())
    listing = taken.with_suffix(".classlist")
    partial = taken.with_suffix(".partial")
    java = os.path.join(note["java_home"], "bin", "java")
    try:
        done = subprocess.run([java, "-Xshare:dump", f"-XX:SharedClassListFile={listing}",
                               f"-XX:SharedArchiveFile={partial}", *QUIET.split(),
                               "-cp", note["class_path"]],
                              capture_output=True, timeout=BUILD_TIMEOUT_S)
        good = done.returncode == 0 and maps_cleanly(partial, note["class_path"], note["java_home"])
        if good:
            os.replace(partial, archive)
            prune_unused(archive.parent, keep=archive)
        return good
    except (OSError, subprocess.TimeoutExpired):  # no java there any more, or a stuck dump
        return False
    finally:
        for leftover in (partial, listing, taken, archive.with_suffix(".building")):
            leftover.unlink(missing_ok=True)


def prune_unused(folder: Path, keep: Path, unused_s: float = UNUSED_S) -> list[Path]:
    """Delete the archives of other Java or pyspark installs that no session has used for
    ``unused_s`` (an upgrade leaves its predecessor's ~190 MB behind); the ones deleted."""
    pruned = []
    for other in folder.glob("spark-*.jsa"):
        if other != keep and time.time() - other.stat().st_mtime > unused_s:
            other.unlink(missing_ok=True)
            pruned.append(other)
    return pruned


def maps_cleanly(path: Path, class_path: str, java_home: str) -> bool:
    """Whether a JVM starts with ``path`` as its archive (``-Xshare:on`` fails otherwise)."""
    java = os.path.join(java_home, "bin", "java")
    with tempfile.TemporaryDirectory() as scratch:  # a crash's hs_err file lands here
        try:
            done = subprocess.run(
                [java, f"-XX:SharedArchiveFile={path}", "-Xshare:on", "-XX:-CreateCoredumpOnCrash",
                 f"-XX:ErrorFile={scratch}/hs_err.log", "-cp", class_path, "-version"],
                cwd=scratch, capture_output=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return False
    return done.returncode == 0


def _alive(marker: Path) -> bool:
    """Whether the process whose pid ``marker`` holds still runs (no marker: False)."""
    try:
        return _pid_alive(int(marker.read_text()))
    except (OSError, ValueError):
        return False


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs: not gone, and not a zombie (an exited JVM whose parent, the user's
    Python, exited first may wait unreaped where nothing adopts orphans)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, someone else's
        pass
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc: alive as far as we can tell


if __name__ == "__main__":  # the detached builder _start_builder starts
    os.nice(19)  # the user's jobs come first
    sys.exit(0 if build(Path(sys.argv[1]), Path(sys.argv[2])) else 1)
