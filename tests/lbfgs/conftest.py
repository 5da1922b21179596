import pytest

from sparkdownpour.examples import arrays_to_frame
from tests.lbfgs.binary_data import binary_arrays


@pytest.fixture(scope="module")
def binary(spark):
    """3000 x 12 in 3 partitions: ``(frame, x, y)``."""
    x, y = binary_arrays(1, 3000, 12, 0.3)
    return arrays_to_frame(spark, x, y, 3), x, y
