"""What the spark-submit jobs share: reading the user's data file and the job's TOML file."""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

FORMATS = ("parquet", "csv", "libsvm")


def sample_data_path(name: str) -> str:
    """A sample data file in Spark's ``data/mllib`` (pip's pyspark package ships them; under
    spark-submit SPARK_HOME is set, and pyspark itself may be imported from a zip)."""
    import os

    import pyspark

    home = os.environ.get("SPARK_HOME") or os.path.dirname(pyspark.__file__)
    return os.path.join(home, "data", "mllib", name)


def guess_format(path: str) -> str:
    if path.endswith((".svm", ".libsvm", ".txt")):
        return "libsvm"
    return "csv" if path.endswith(".csv") else "parquet"


def load_frame(spark, path: str, fmt: str | None = None, label_col: str = "label",
               features_col: Sequence[str] | str | None = None):
    """``(df, features)``: the file as a DataFrame and the feature column(s) to train on.

    Features are ``features_col`` if given, else a ``features`` column (LIBSVM files have one),
    else every numeric column but the label.
    """
    from pyspark.sql import types as T

    fmt = fmt or guess_format(path)
    if fmt not in FORMATS:
        raise ValueError(f"data format {fmt!r} is not supported; use one of {FORMATS}")
    reader = spark.read.format(fmt)
    if fmt == "csv":
        reader = reader.option("header", True).option("inferSchema", True)
    df = reader.load(path)
    if label_col not in df.columns:
        raise ValueError(f"label column {label_col!r} not in {path} (columns: {df.columns}); "
                         "pass --label-col")
    if features_col:
        if isinstance(features_col, str):
            return df, features_col
        return df, features_col[0] if len(features_col) == 1 else list(features_col)
    if "features" in df.columns:
        return df, "features"
    return df, [f.name for f in df.schema.fields
                if f.name != label_col and isinstance(f.dataType, T.NumericType)]


def held_out_arrays(frame, features, label_col: str) -> tuple[np.ndarray, np.ndarray]:
    """Collect the held-out split to the driver as numpy (it is the small side of the split)."""
    from sparkdownpour import data

    table = data.prepare(frame, features, label_col).toArrow()
    column = table.column("features")
    if isinstance(column.type, pa.StructType):  # a wide sparse vector (data.sparse): densified
        rows = column.to_pylist()             # here, as held-out x for validation_data
        x = np.zeros((len(rows), rows[0]["size"] if rows else 0), np.float32)
        for i, row in enumerate(rows):
            x[i, row["indices"]] = row["values"]
    else:
        x = np.stack(column.to_numpy(zero_copy_only=False)).astype(np.float32)
    return x, table.column("label").to_numpy().astype(np.float32)


def apply_overrides(args, overrides) -> None:
    """Command-line options win over the TOML: ``(option, section dict, key)`` triples."""
    for option, section, key in overrides:
        value = getattr(args, option)
        if value is not None:
            section[key] = value


def read_job_toml(path: str | Path, allowed: dict[str, set[str] | None]) -> dict[str, dict]:
    """The TOML file's sections; an unknown section or key is refused with what is allowed.

    ``allowed`` maps each section to its keys (``None``: any key, e.g. ``[spark]`` settings).
    """
    with open(path, "rb") as handle:
        try:
            document = tomllib.load(handle)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path} is not valid TOML: {exc}") from exc
    unknown = sorted(set(document) - set(allowed))
    if unknown:
        raise ValueError(f"{path}: unknown section(s) {unknown}; allowed: {sorted(allowed)}")
    for section, keys in allowed.items():
        values = document.setdefault(section, {})
        if not isinstance(values, dict):
            raise ValueError(f"{path}: [{section}] must be a table of keys")
        if keys is not None and set(values) - keys:
            raise ValueError(f"{path} [{section}]: unknown key(s) {sorted(set(values) - keys)}; "
                             f"allowed: {sorted(keys)}")
    return document
