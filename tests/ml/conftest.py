"""Fixtures for the Spark ML tests."""

import pytest

from sparkdownpour.examples import digits_arrays

PIXELS = [f"p{i}" for i in range(64)]


@pytest.fixture(scope="package")
def digit_columns(spark):
    """Digits as 64 numeric columns, the shape an ETL pipeline hands to VectorAssembler."""
    x_train, y_train, x_test, y_test = digits_arrays()

    def frame(x, y, partitions):
        rows = [tuple(float(v) for v in features) + (int(label),) for features, label in zip(x, y)]
        return spark.createDataFrame(rows, PIXELS + ["label"]).repartition(partitions)

    return frame(x_train, y_train, 4).cache(), frame(x_test, y_test, 2).cache()
