"""worker_daemon: the installed pyspark's own zips go behind its compiled modules; others stay."""

import os
from importlib.metadata import version

import pyspark
import pytest

from sparkdownpour.worker_daemon import (
    DAEMON_MODULE,
    SETTING,
    ImportCheck,
    daemon_check,
    daemon_setting,
    prefer_installed_modules,
    redundant_zips,
)

LIB = os.path.join(os.path.dirname(pyspark.__file__), "python", "lib")
PYSPARK_ZIP = os.path.join(LIB, "pyspark.zip")
PY4J_ZIP = os.path.join(LIB, f"py4j-{version('py4j')}-src.zip")
SITE = os.path.dirname(os.path.dirname(pyspark.__file__))


def test_the_installed_pysparks_own_zips_move_behind_it():
    path = [PYSPARK_ZIP, PY4J_ZIP, "/somewhere/else", SITE]
    assert redundant_zips(path) == [PYSPARK_ZIP, PY4J_ZIP]
    assert prefer_installed_modules(path) == ["/somewhere/else", SITE, PYSPARK_ZIP, PY4J_ZIP]


def test_another_installations_zips_stay_first(tmp_path):
    """A cluster's SPARK_HOME: its pyspark may not be the one installed here."""
    cluster_lib = tmp_path / "spark" / "python" / "lib"
    cluster_lib.mkdir(parents=True)
    zips = [str(cluster_lib / "pyspark.zip"), str(cluster_lib / f"py4j-{version('py4j')}-src.zip")]
    for name in zips:
        open(name, "wb").close()
    assert redundant_zips([*zips, SITE]) == []
    assert prefer_installed_modules([*zips, SITE]) == [*zips, SITE]


def test_a_py4j_zip_of_another_version_stays_first(tmp_path):
    other = os.path.join(LIB, "py4j-0.0.1-src.zip")  # named as if beside the installed pyspark
    assert redundant_zips([PYSPARK_ZIP, other, SITE]) == [PYSPARK_ZIP]


def test_without_an_installed_pyspark_nothing_moves(tmp_path):
    assert redundant_zips([PYSPARK_ZIP, str(tmp_path)]) == []


@pytest.mark.parametrize("conf, expected", [
    (None, {SETTING: DAEMON_MODULE}),
    ({"spark.speculation": True}, {SETTING: DAEMON_MODULE}),
    ({SETTING: "coverage_daemon"}, {}),  # the user's own daemon module wins
])
def test_the_daemon_setting_unless_the_user_chose_one(conf, expected):
    assert daemon_setting(daemon_check("local[2]", conf)) == expected
    assert DAEMON_MODULE == "sparkdownpour.worker_daemon"


def test_no_daemon_setting_for_a_cluster_master():
    assert daemon_check("spark://host:7077", None) is None
    assert daemon_setting(daemon_check("yarn", None)) == {}


def test_no_daemon_setting_where_the_executors_python_cannot_import_it(tmp_path):
    """Spark would fail every Python UDF of the session, the user's own too."""
    failing = tmp_path / "python"
    failing.write_text("#!/bin/sh\nexit 1\n")
    failing.chmod(0o755)
    assert daemon_setting(ImportCheck(str(failing))) == {}
    assert daemon_setting(ImportCheck(str(tmp_path / "no-such-python"))) == {}
    assert daemon_setting(None) == {}  # not checked: not set
