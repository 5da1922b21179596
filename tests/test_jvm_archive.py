"""The embedded JVM's class archive (jvm_archive): listed by one session, built by a detached
builder for a later one, mapped from then on; a file cut short is never used. Real java runs,
with a class list of a few classes so that the dump takes seconds, not half a minute."""

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from sparkdownpour import jvm_archive

CLASSES = ["java/lang/Object", "java/lang/String", "java/util/ArrayList",
           "org/apache/spark/SparkConf"]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(jvm_archive.ENV_CACHE, str(tmp_path / "jvm"))
    monkeypatch.delenv(jvm_archive.ENV_SWITCH, raising=False)
    monkeypatch.setattr(jvm_archive, "_listing", None)
    return tmp_path / "jvm"


def _spark_class_path() -> str:
    import pyspark

    return str(Path(pyspark.__file__).parent / "jars" / "*")


def _java_home() -> str:
    return str(Path(os.path.realpath(shutil.which("java"))).parents[1])


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def _finished_listing(listing: Path) -> None:
    """What a session's JVM leaves: its class list, and the note of a JVM that has exited."""
    listing.write_text("\n".join(CLASSES) + "\n")
    listing.with_suffix(".json").write_text(json.dumps(
        {"pid": _dead_pid(), "class_path": _spark_class_path(), "java_home": _java_home()}))


@pytest.mark.slow
def test_a_listed_session_leads_to_an_archive_a_later_session_maps(cache):
    first = jvm_archive.java_options()
    assert first.startswith("-XX:DumpLoadedClassList=") and jvm_archive._listing is not None
    listing = jvm_archive._listing
    assert first == f"-XX:DumpLoadedClassList={listing}"
    # While that JVM runs (its note names a live pid) nobody lists or builds again.
    listing.with_suffix(".json").write_text(json.dumps({"pid": os.getpid()}))
    assert jvm_archive.java_options() == ""
    _finished_listing(listing)
    assert jvm_archive.java_options() == ""  # started the builder, did not wait for it
    key = jvm_archive.archive_key()
    deadline = time.monotonic() + 120
    while (cache / f"spark-{key}.building").exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    archive = cache / f"spark-{key}.jsa"
    assert archive.is_file(), sorted(p.name for p in cache.iterdir())
    assert sorted(p.name for p in cache.iterdir()) == [archive.name]  # list and notes cleaned up
    assert jvm_archive.java_options() == \
        f"-XX:SharedArchiveFile={archive} -Xshare:auto {jvm_archive.QUIET}"
    assert jvm_archive.maps_cleanly(archive, _spark_class_path(), _java_home())


@pytest.mark.slow
def test_an_archive_cut_short_is_refused_and_never_named(cache, tmp_path):
    cache.mkdir()
    listing = cache / "spark-k.abc.classlist"
    _finished_listing(listing)
    taken = listing.with_suffix(".taken")
    listing.with_suffix(".json").rename(taken)
    stale, recent = cache / "spark-old.jsa", cache / "spark-other.jsa"
    for path, age_days in ((stale, 31), (recent, 29)):  # other installs' archives
        path.write_bytes(b"x")
        os.utime(path, (time.time() - age_days * 86400,) * 2)
    good = cache / "spark-k.jsa"
    assert jvm_archive.build(taken, good) and good.is_file()
    assert not stale.exists() and recent.exists()  # unused for 30 days: pruned by the build
    cut = tmp_path / "cut.jsa"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    assert not jvm_archive.maps_cleanly(cut, _spark_class_path(), _java_home())
    # A builder whose dump fails (here: a class path java cannot dump from) names nothing.
    _finished_listing(listing)
    note = json.loads(listing.with_suffix(".json").read_text())
    taken.write_text(json.dumps({**note, "java_home": str(tmp_path / "no-such-java")}))
    assert not jvm_archive.build(taken, tmp_path / "never.jsa")
    assert not (tmp_path / "never.jsa").exists() and not listing.exists()


def test_nothing_is_listed_when_switched_off_or_the_cache_path_has_a_space(cache, monkeypatch,
                                                                            tmp_path):
    monkeypatch.setenv(jvm_archive.ENV_SWITCH, "0")
    assert jvm_archive.java_options() == ""
    monkeypatch.delenv(jvm_archive.ENV_SWITCH)
    monkeypatch.setenv(jvm_archive.ENV_CACHE, str(tmp_path / "my cache"))
    assert jvm_archive.java_options() == "" and not (tmp_path / "my cache").exists()
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)  # writable by anyone: an archive there could be anyone's code
    monkeypatch.setenv(jvm_archive.ENV_CACHE, str(shared))
    assert jvm_archive.java_options() == "" and list(shared.iterdir()) == []


def test_what_a_killed_builder_left_is_cleaned_by_the_next_session(cache):
    key = jvm_archive.archive_key()
    cache.mkdir(mode=0o700, parents=True)
    old = time.time() - 2 * jvm_archive.ORPHAN_LIST_S

    def left(name, age=old):
        path = cache / f"spark-{key}.{name}"
        path.write_text("x")
        os.utime(path, (age, age))
        return path

    # A builder SIGKILLed mid-dump: its marker names a dead pid; note, list and partial stay.
    (cache / f"spark-{key}.building").write_text(str(_dead_pid()))
    killed = [left("dead1.taken"), left("dead1.classlist"), left("dead1.partial")]
    orphan = left("dead2.classlist")  # its JVM died before writing the note, long ago
    kept = [left("new.classlist", time.time()),  # a JVM starting now: its note comes soon
            left("just.taken", time.time()), left("just.classlist")]  # a builder starting
    # The next session cleans up as it looks for a list to build from (and, none being
    # ready, asks its own JVM for one).
    assert jvm_archive.java_options().startswith("-XX:DumpLoadedClassList=")
    gone = [*killed, orphan, cache / f"spark-{key}.building"]
    assert not any(p.exists() for p in gone), sorted(p.name for p in cache.iterdir())
    assert all(p.exists() for p in kept)


def test_the_archives_state_is_what_a_benchmark_waits_for(cache, monkeypatch):
    key = jvm_archive.archive_key()
    assert jvm_archive.archive_state() == "missing"
    cache.mkdir(mode=0o700)
    marker = cache / f"spark-{key}.building"
    marker.write_text(str(os.getpid()))  # a builder that runs
    assert jvm_archive.archive_state() == "building"
    marker.write_text(str(_dead_pid()))  # one that died: nothing is being built
    assert jvm_archive.archive_state() == "missing"
    (cache / f"spark-{key}.jsa").write_bytes(b"archive")
    assert jvm_archive.archive_state() == "ready"
    monkeypatch.setenv(jvm_archive.ENV_SWITCH, "0")
    assert jvm_archive.archive_state() == "off"
