"""The generated configuration reference lists every knob of both configs, each documented."""

import dataclasses
import sys
from pathlib import Path

import pytest

from sparkdownpour.config import DownpourConfig, SandblasterConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "docs" / "_ext"))
from config_reference import config_table, table_rst  # noqa: E402


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
