"""``transform`` where ETL data lives: in-memory frames, Parquet, ORC and CSV tables, batch and
Structured Streaming, for both model kinds. Every test collects the scored rows and compares
each row's prediction and probability with the Keras model's own output for that row's features.

Each test starts with Spark's columnar Arrow-UDF input switched on (Spark's default), so a test
shows that ``transform`` itself copes with a vector column on a columnar scan.
"""

import numpy as np
import pytest
from pyspark.ml import PipelineModel
from pyspark.ml.feature import VectorAssembler
from pyspark.ml.functions import array_to_vector

from sparkdownpour.examples import arrays_to_frame
from sparkdownpour.ml import DownpourEstimator, SandblasterEstimator
from sparkdownpour.ml.models import COLUMNAR_UDF_INPUT
from tests.ml.test_estimators import dense

ROWS, WIDTH = 24, 3
COLUMNS = [f"f{i}" for i in range(WIDTH)]


@pytest.fixture(autouse=True)
def columnar_udf_input_on(spark):
    spark.conf.set(COLUMNAR_UDF_INPUT, "true")
    yield
    spark.conf.unset(COLUMNAR_UDF_INPUT)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(17)
    x = rng.normal(size=(ROWS, WIDTH)).astype(np.float32)
    y = (x @ np.array([1.5, -2.0, 0.5]) > 0).astype(np.int64)
    return x, y


@pytest.fixture(scope="module")
def models(spark, data):
    x, y = data
    train = arrays_to_frame(spark, x, y, 2)
    return {
        "downpour": DownpourEstimator(model=dense(WIDTH, 2, "softmax"), epochs=1,
                                      options={"verbose": 0}).fit(train),
        "sandblaster": SandblasterEstimator(model=dense(WIDTH, 1, "sigmoid"), maxIter=3,
                                            options={"verbose": 0}).fit(train),
    }


@pytest.fixture(scope="module")
def memory(spark, data):
    """The feature table: an id, the features as a vector, an array and numeric columns."""
    x, y = data
    rows = [(i, [float(v) for v in x[i]], *[float(v) for v in x[i]], int(y[i]))
            for i in range(ROWS)]
    frame = spark.createDataFrame(rows, "id long, arr array<double>, "
                                  + ", ".join(f"{c} double" for c in COLUMNS) + ", label long")
    return frame.select("id", array_to_vector("arr").alias("vec"), *frame.columns[1:])


@pytest.fixture(scope="module")
def tables(spark, memory, tmp_path_factory):
    """``name -> DataFrame`` read back from each format (CSV holds the numeric columns only)."""
    root = tmp_path_factory.mktemp("tables")
    memory.repartition(2).write.parquet(str(root / "parquet"))
    memory.repartition(2).write.orc(str(root / "orc"))
    memory.select("id", *COLUMNS, "label").repartition(2).write.option("header", True) \
        .csv(str(root / "csv"))
    return {"memory": memory,
            "parquet": spark.read.parquet(str(root / "parquet")),
            # ORC keeps a vector column as a plain struct; the table's schema restores the type.
            "orc": spark.read.schema(memory.schema).orc(str(root / "orc")),
            "orc, untyped": spark.read.orc(str(root / "orc")),
            "csv": spark.read.option("header", True).option("inferSchema", True)
            .csv(str(root / "csv"))}


def expected(fitted, x):
    """``(prediction, probability)`` from the Keras model on the driver."""
    z = fitted.keras_model(x).numpy().astype(np.float64)
    if fitted.getTask() == "binary":
        p = z[:, 0]
        return (p > 0.5).astype(np.float64), np.stack([1.0 - p, p], axis=1)
    return z.argmax(axis=1).astype(np.float64), z


def scorer(fitted, features: str):
    """A transformer that scores the table through ``features``: the vector column, the array
    column, or the numeric columns assembled into a vector (a Spark ML Model takes one column)."""
    if features == "columns":
        return PipelineModel(stages=[
            VectorAssembler(inputCols=COLUMNS, outputCol="assembled"),
            fitted.copy({fitted.featuresCol: "assembled"})])
    return fitted.copy({fitted.featuresCol: features})


def check_scores(rows, fitted, x, count=ROWS):
    """Every id exactly once, and each row's columns equal to the Keras model's."""
    assert sorted(row.id for row in rows) == list(range(count))
    ids = np.array([row.id for row in rows])
    prediction, probability = expected(fitted, x[ids])
    np.testing.assert_array_equal([row.prediction for row in rows], prediction)
    np.testing.assert_allclose(np.stack([row.probability.toArray() for row in rows]),
                               probability, rtol=1e-5, atol=1e-6)


CASES = [(source, features) for source in ("memory", "parquet", "orc")
         for features in ("vec", "arr", "columns")] + [("csv", "columns")]


@pytest.mark.parametrize("kind", ["downpour", "sandblaster"])
@pytest.mark.parametrize("source,features", CASES)
def test_transform_scores_every_row_of_every_source(models, tables, data, kind, source,
                                                    features):
    x, y = data
    fitted, table = models[kind], tables[source]
    scored = scorer(fitted, features).transform(table)
    # No pruning: every input column comes back beside the scores (vector columns included).
    rows = scored.collect()
    check_scores(rows, fitted, x)
    assert set(table.columns) <= set(rows[0].asDict())
    assert all(row.label == y[row.id] for row in rows)
    # Pruned: only what the query selects is read (the vector column is dropped from the
    # scan unless it is the features column).
    check_scores(scored.select("id", "probability", "prediction").collect(), fitted, x)
    pairs = scored.select("label", "prediction").collect()
    assert len(pairs) == ROWS and {row.label for row in pairs} == set(y.tolist())


def test_the_reported_query_on_a_parquet_vector_table(models, tables, data):
    """Issue 17's query: a VectorAssembler output written to Parquet, read back, scored."""
    x, y = data
    fitted = models["downpour"].copy({models["downpour"].featuresCol: "vec"})
    rows = fitted.transform(tables["parquet"].select("id", "vec", "label")) \
        .select("id", "label", "prediction").collect()
    ids = np.array([row.id for row in rows])
    np.testing.assert_array_equal([row.prediction for row in rows],
                                  expected(models["downpour"], x[ids])[0])
    assert [row.label for row in rows] == y[ids].tolist()


def test_a_vector_read_back_as_a_plain_struct_is_refused_with_the_fix(models, tables):
    fitted = models["downpour"].copy({models["downpour"].featuresCol: "vec"})
    with pytest.raises(TypeError, match=r"read back without its type.*spark.read.schema"):
        fitted.transform(tables["orc, untyped"])


def test_a_table_without_vector_columns_keeps_the_columnar_path(spark, models, tables, data):
    fitted = models["sandblaster"].copy({models["sandblaster"].featuresCol: "arr"})
    rows = fitted.transform(tables["parquet"].drop("vec")).collect()
    check_scores(rows, models["sandblaster"], data[0])
    assert spark.conf.get(COLUMNAR_UDF_INPUT) == "true"  # only a UDT column switches it off


@pytest.mark.parametrize("kind", ["downpour", "sandblaster"])
def test_a_streaming_query_over_parquet_scores_every_row(spark, models, tables, data, kind,
                                                         tmp_path):
    x, _ = data
    source = tmp_path / "incoming"
    tables["parquet"].filter("id < 12").write.parquet(str(source / "part=1"))
    stream = spark.readStream.schema(tables["parquet"].schema).parquet(str(source / "*"))
    fitted = models[kind].copy({models[kind].featuresCol: "vec"})
    name = f"scores_{kind}"
    query = (fitted.transform(stream).writeStream.format("memory").queryName(name)
             .option("checkpointLocation", str(tmp_path / "checkpoint")).start())
    try:
        query.processAllAvailable()
        tables["parquet"].filter("id >= 12").write.parquet(str(source / "part=2"))
        query.processAllAvailable()  # a second micro-batch, from the file that arrived later
        rows = spark.table(name).collect()
    finally:
        query.stop()
    check_scores(rows, models[kind], x)


def test_foreach_batch_scores_each_micro_batch(spark, models, tables, data, tmp_path):
    x, _ = data
    tables["parquet"].write.parquet(str(tmp_path / "incoming"))
    stream = spark.readStream.schema(tables["parquet"].schema).option("maxFilesPerTrigger", 1) \
        .parquet(str(tmp_path / "incoming"))
    fitted = models["downpour"].copy({models["downpour"].featuresCol: "arr"})
    seen = {}

    def score(batch, batch_id):
        seen[batch_id] = fitted.transform(batch).select("id", "prediction", "probability") \
            .collect()

    query = (stream.writeStream.foreachBatch(score)
             .option("checkpointLocation", str(tmp_path / "checkpoint")).start())
    try:
        query.processAllAvailable()
    finally:
        query.stop()
    assert len(seen) >= 2  # one micro-batch per file
    check_scores([row for rows in seen.values() for row in rows], models["downpour"], x)


@pytest.mark.parametrize("kind", ["downpour", "sandblaster"])
def test_a_saved_and_loaded_pipeline_model_scores_parquet(spark, models, tables, data, kind,
                                                          tmp_path):
    path = str(tmp_path / "pipeline")
    scorer(models[kind], "columns").write().save(path)
    loaded = PipelineModel.load(path)
    rows = loaded.transform(tables["parquet"]).collect()
    check_scores(rows, models[kind], data[0])
