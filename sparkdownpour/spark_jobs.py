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
    if run_id:  # another thread may stop the run's jobs: cancel_run
        sc.addJobTag(run_tag(run_id))
    try:
        yield group
    except BaseException:
        logger.warning("cancelling Spark job group %s (%s)", group, description)
        sc.cancelJobGroup(group)
        raise
    finally:
        if run_id:
            sc.removeJobTag(run_tag(run_id))
        sc.setLocalProperty("spark.jobGroup.id", None)
        sc.setLocalProperty("spark.job.description", None)


def run_tag(run_id: str) -> str:
    """The Spark job tag of every job a run starts under ``job_group(..., run_id=...)``."""
    return f"sparkdownpour-run-{run_id}"


def cancel_run(spark, run_id: str, reason: object = None) -> None:
    """Cancel every running job of the run, from any thread (e.g. when a shard dies)."""
    sc = getattr(spark, "sparkContext", spark)
    logger.warning("cancelling the Spark jobs of run %s%s", run_id[:8],
                   f": {reason}" if reason is not None else "")
    sc.cancelJobsWithTag(run_tag(run_id))
