"""Generated binary classification data for the Sandblaster tests (classic and Connect)."""

import numpy as np


def binary_arrays(seed: int, rows: int, cols: int, offset: float):
    """``(x, y)``: Gaussian features and labels from a noisy random linear rule."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, cols)).astype(np.float32)
    y = (x @ rng.normal(size=cols) + 0.5 * rng.normal(size=rows) > offset).astype(np.float32)
    return x, y
