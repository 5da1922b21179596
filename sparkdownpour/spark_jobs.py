"""Running a Spark job under a named job group that is cancelled if anything goes wrong."""

from __future__ import annotations

import contextlib
import logging
import uuid

logger = logging.getLogger(__name__)


def describe(algorithm: str, run_id: str | None, what: str) -> str:
    """The Spark UI's description of a job: ``sparkdownpour <algorithm> run <id>: <what>``.

    The same short run id is in the dashboard's title, ``history.info["run_id"]`` and the
    driver log, so a job in the Spark UI can be matched to its run.
    """
    run = f" run {run_id[:8]}" if run_id else ""
    return f"sparkdownpour {algorithm}{run}: {what}"


@contextlib.contextmanager
def job_group(spark, description: str, *, run_id: str | None = None):  # SparkSession/Context
    """Tag every job started inside with one group id; cancel the group on any exception.

    A failed epoch or a KeyboardInterrupt in a notebook must not leave tasks running against a
    server that is about to shut down. With ``run_id`` the group id starts with the run's id.
    """
    sc = getattr(spark, "sparkContext", spark)
    run = f"{run_id[:8]}-" if run_id else ""
    group = f"sparkdownpour-{run}{uuid.uuid4().hex[:12]}"
    sc.setJobGroup(group, description, interruptOnCancel=True)
    try:
        yield group
    except BaseException:
        logger.warning("cancelling Spark job group %s (%s)", group, description)
        sc.cancelJobGroup(group)
        raise
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)
        sc.setLocalProperty("spark.job.description", None)
