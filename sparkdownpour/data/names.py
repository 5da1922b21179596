"""Column names, in a module of their own so that a replica can read them without importing
``data.columns`` (and pyspark.ml with it)."""

FEATURES = "features"
LABEL = "label"
# Added by ``columns.with_partition_id`` for the resident replicas' regrouping (``data.regroup``).
PARTITION_ID = "__sparkdownpour_partition"
