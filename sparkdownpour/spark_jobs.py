"""Running Spark jobs under a job tag that is interrupted if anything goes wrong."""

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
def job_group(spark, description: str, *, run_id: str | None = None):
    """Tag every job started inside (in this thread) with one job tag; interrupt the tag's jobs
    on any exception. Yields the tag.

    A failed epoch or a KeyboardInterrupt in a notebook must not leave tasks running against a
    server that is about to shut down. Under Spark Connect the session's tags
    (``addTag``/``interruptTag``); in a classic session the SparkContext's job tags, which also
    reach RDD jobs (a session's tags reach only its SQL executions), and the Spark UI shows
    ``description`` for the jobs. With ``run_id`` the tag starts with the run's id.
    """
    session = getattr(spark, "sparkSession", spark)  # a DataFrame's session, or the session
    run = f"{run_id[:8]}-" if run_id else ""
    tag = f"sparkdownpour-{run}{uuid.uuid4().hex[:12]}"
    sc = _classic_context(session)
    tags = [tag, run_tag(run_id)] if run_id else [tag]  # the run's: cancel_run from any thread
    for each in tags:
        session.addTag(each) if sc is None else sc.addJobTag(each)
    if sc is not None:
        sc.setJobDescription(description)
        sc.setInterruptOnCancel(True)  # a cancelled task's thread (and Python worker) stops
    try:
        yield tag
    except BaseException:
        logger.warning("interrupting the Spark jobs tagged %s (%s)", tag, description)
        try:
            session.interruptTag(tag) if sc is None else sc.cancelJobsWithTag(tag)
        except Exception as e:  # the session itself may be what failed
            logger.warning("could not interrupt the jobs tagged %s: %s", tag, e)
        raise
    finally:
        for each in tags:
            session.removeTag(each) if sc is None else sc.removeJobTag(each)
        if sc is not None:
            sc.setJobDescription(None)
            sc.setLocalProperty("spark.job.interruptOnCancel", None)


def _classic_context(session):
    """A classic session's SparkContext (or the SparkContext given); None under Connect."""
    from sparkdownpour.session import is_connect

    return None if is_connect(session) else getattr(session, "sparkContext", session)


def run_tag(run_id: str) -> str:
    """The job tag of every job a run starts under ``job_group(..., run_id=...)``."""
    return f"sparkdownpour-run-{run_id}"


def cancel_run(spark, run_id: str, reason: object = None) -> None:
    """Interrupt every running job of the run, from any thread (e.g. when a shard dies).

    Session tags are thread-local under Connect but ``interruptTag`` reaches every thread's
    jobs carrying the tag; a classic SparkContext's ``cancelJobsWithTag`` does the same."""
    session = getattr(spark, "sparkSession", spark)
    logger.warning("cancelling the Spark jobs of run %s%s", run_id[:8],
                   f": {reason}" if reason is not None else "")
    sc = _classic_context(session)
    if sc is None:
        session.interruptTag(run_tag(run_id))
    else:
        sc.cancelJobsWithTag(run_tag(run_id))
