"""The generated configuration reference lists every knob of both configs, each documented."""

import dataclasses
import importlib.util
from pathlib import Path

import pytest

from sparkdownpour.config import DownpourConfig, SandblasterConfig

_EXTENSION = Path(__file__).resolve().parents[1] / "docs" / "_ext" / "config_reference.py"
_spec = importlib.util.spec_from_file_location("config_reference", _EXTENSION)
config_reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(config_reference)
config_table, table_rst = config_reference.config_table, config_reference.table_rst


@pytest.mark.parametrize("cls", [DownpourConfig, SandblasterConfig])
def test_every_knob_is_in_the_reference_with_its_documentation(cls):
    table = {knob.name: knob for knob in config_table(cls)}
    assert set(table) == {field.name for field in dataclasses.fields(cls)}
    undocumented = [name for name, knob in table.items() if not knob.doc.strip()]
    assert not undocumented, f"{cls.__name__}: add a docstring under {undocumented} in config.py"
    rst = "\n".join(table_rst(cls))
    for name in table:
        assert f"``{name}``" in rst


@pytest.mark.parametrize("cls", [DownpourConfig, SandblasterConfig])
def test_defaults_in_the_reference_are_the_dataclass_defaults(cls):
    defaults = {knob.name: knob.default for knob in config_table(cls)}
    assert defaults == {field.name: repr(field.default) for field in dataclasses.fields(cls)}
