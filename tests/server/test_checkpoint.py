"""Checkpoints: exact round trip of the whole state, atomic files, corrupt ones skipped."""

import time
import zipfile

import numpy as np
import pytest

from sparkdownpour import optimizers
from sparkdownpour.server.checkpoint import (
    Checkpointer,
    CheckpointError,
    latest_checkpoint,
    read_checkpoint,
    write_checkpoint,
)
from sparkdownpour.server.ledger import Position
from sparkdownpour.server.store import ParameterStore
from tests.server.conftest import full, zeros

pytestmark = pytest.mark.timeout(60)


def trained_store(rule="adam", pushes=5):
    store = ParameterStore(zeros(), optimizers.get(rule, learning_rate=0.1))
    store.open_epoch(2)
    for i in range(pushes):
        store.push(full(i + 1), replica="r", base_step=i, position=Position(2, 1, i, i + 1))
    return store


@pytest.mark.parametrize("rule", ["sgd", "momentum", "adagrad", "adam"])
def test_restored_store_continues_exactly_like_the_original(tmp_path, rule):
    original = trained_store(rule)
    path = write_checkpoint(tmp_path, original.export_state(), config_hash="h", extra={"e": 1})
    state = read_checkpoint(path, config_hash="h")
    assert state["extra"] == {"e": 1} and state["step"] == 5
    restored = ParameterStore(zeros(), optimizers.get(rule, learning_rate=0.1))
    restored.restore_state(state)
    assert restored.status()["progress"] == {"2/1": 5} and restored.step == 5
    for store in (original, restored):  # the same next push gives bitwise the same params
        assert store.push(full(0.5), replica="r", base_step=5,
                          position=Position(2, 1, 5, 6)).applied
        assert not store.push(full(0.5), replica="r", base_step=5,
                              position=Position(2, 1, 4, 5)).applied
    for a, b in zip(original.snapshot(), restored.snapshot()):
        assert a.tobytes() == b.tobytes()


def test_keeps_the_newest_k_and_leaves_no_temp_files(tmp_path):
    store = trained_store(pushes=1)
    for _ in range(5):
        write_checkpoint(tmp_path, store.export_state(), config_hash="h", keep=2)
        store.push(full(1), replica="r", base_step=0)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 2 and all(n.startswith("ckpt-") and n.endswith(".npz") for n in names)
    assert latest_checkpoint(tmp_path, config_hash="h")["step"] == 5


def corrupt_truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def corrupt_flip(path):
    """Change one parameter value inside the zip, keeping the zip itself valid."""
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    data = bytearray(members["p0.npy"])
    data[-1] ^= 0x40
    members["p0.npy"] = bytes(data)
    with zipfile.ZipFile(path, "w") as z:
        for name, blob in members.items():
            z.writestr(name, blob)


def corrupt_garbage(path):
    path.write_bytes(b"\x80\x04\x95 not a zip at all")


@pytest.mark.parametrize("damage", [corrupt_truncate, corrupt_flip, corrupt_garbage])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_with_a_warning(tmp_path, damage):
    store = trained_store(pushes=2)
    write_checkpoint(tmp_path, store.export_state(), config_hash="h")
    store.push(full(1), replica="r", base_step=0)
    newest = write_checkpoint(tmp_path, store.export_state(), config_hash="h")
    damage(newest)
    with pytest.raises(CheckpointError):
        read_checkpoint(newest)
    with pytest.warns(RuntimeWarning, match=f"skipping checkpoint {newest}"):
        state = latest_checkpoint(tmp_path, config_hash="h")
    assert state["step"] == 2


def test_a_checkpoint_of_another_configuration_is_not_used(tmp_path):
    write_checkpoint(tmp_path, trained_store().export_state(), config_hash="other")
    with pytest.warns(RuntimeWarning, match="different configuration"):
        assert latest_checkpoint(tmp_path, config_hash="mine") is None
    assert latest_checkpoint(tmp_path / "missing", config_hash="mine") is None


def test_no_pickle_is_ever_loaded(tmp_path):
    """An .npz member holding a pickled object array is refused, not executed."""
    marker = tmp_path / "pwned"
    np.savez(tmp_path / "ckpt-000000000009-0000000000000000001.npz",
             meta=np.array([Evil(str(marker))], dtype=object))
    with pytest.warns(RuntimeWarning, match="unreadable"):
        assert latest_checkpoint(tmp_path) is None
    assert not marker.exists()


class Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_checkpointer_writes_every_n_updates_and_on_demand(tmp_path):
    store = trained_store(pushes=0)
    with Checkpointer(store, tmp_path, config_hash="h", every_updates=3, every_s=3600,
                      keep=10, extra=lambda: {"epochs_done": 0}) as checkpointer:
        for i in range(7):
            store.push(full(1), replica="r", base_step=i)
            time.sleep(0.15)
        checkpointer.write({"epochs_done": 1})
    steps = sorted(read_checkpoint(p)["step"] for p in checkpointer.written)
    assert steps[:2] == [3, 6] and steps[-1] == 7
    assert latest_checkpoint(tmp_path)["extra"] == {"epochs_done": 1}
