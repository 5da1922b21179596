"""History.to_pandas and History.plot on records shaped like Downpour's and Sandblaster's."""

import pytest

from sparkdownpour.history import History

PNG = b"\x89PNG\r\n\x1a\n"


def downpour_history():
    h = History(info={"rows": 10})
    for epoch, loss in enumerate([2.0, 1.0, 0.5], start=1):
        h.append({"epoch": epoch, "loss": loss, "val_accuracy": 0.5 + 0.1 * epoch,
                  "updates": 10 * epoch, "diverging_replicas": []})
    return h


def test_to_pandas_has_a_row_per_epoch_and_every_column():
    frame = downpour_history().to_pandas()
    assert list(frame.columns) == ["epoch", "loss", "val_accuracy", "updates",
                                   "diverging_replicas"]
    assert list(frame.index) == [1, 2, 3] and frame["loss"].tolist() == [2.0, 1.0, 0.5]
    sandblaster = History()
    sandblaster.append({"iteration": 1, "objective": 0.7, "grad_norm": 0.1})
    assert sandblaster.to_pandas().loc[1, "objective"] == 0.7
    assert History().to_pandas().empty


def test_plot_writes_a_png_with_one_panel_per_key(tmp_path):
    history = downpour_history()
    path = history.plot(tmp_path / "curves" / "train.png")
    with open(path, "rb") as handle:
        data = handle.read()
    assert data.startswith(PNG) and len(data) > 2000
    wide = history.plot(tmp_path / "more.png", keys=["loss", "val_accuracy", "updates"])
    # A panel per key: three panels make a wider image than two (PNG width at bytes 16..20).
    with open(wide, "rb") as handle:
        width = int.from_bytes(handle.read()[16:20], "big")
    assert width > int.from_bytes(data[16:20], "big")


def test_plot_refuses_what_it_cannot_draw(tmp_path):
    with pytest.raises(ValueError, match="history is empty"):
        History().plot(tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"\['nope'\] are not in the history"):
        downpour_history().plot(tmp_path / "x.png", keys=["nope"])
    with pytest.raises(ValueError, match="must end in .png"):
        downpour_history().plot(tmp_path / "x.jpg")


def test_callbacks_see_each_record_as_it_is_appended():
    from sparkdownpour.callbacks import CallbackList, LambdaCallback
    from sparkdownpour.trainer import Run

    seen = []
    h = History()
    run = Run("r", 0.0, CallbackList([LambdaCallback(on_epoch_end=lambda e, logs: seen.append(
        (e, logs)))]), resume=False)
    run.record(h, {"epoch": 1, "loss": 1.0}, 1)
    assert seen == [(1, {"epoch": 1, "loss": 1.0})] and h.epochs == [{"epoch": 1, "loss": 1.0}]
