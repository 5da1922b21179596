"""Running a Spark job under a named job group that is cancelled if anything goes wrong."""

from __future__ import annotations

import contextlib
import logging
import uuid

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def job_group(spark, description: str):  # a SparkSession or a SparkContext
    """Tag every job started inside with one group id; cancel the group on any exception.

    A failed epoch or a KeyboardInterrupt in a notebook must not leave tasks running against a
    server that is about to shut down.
    """
    sc = getattr(spark, "sparkContext", spark)
    group = f"sparkdownpour-{uuid.uuid4().hex[:12]}"
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
