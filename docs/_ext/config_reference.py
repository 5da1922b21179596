"""Sphinx directive ``config-reference``: a table of a config dataclass's knobs.

The table is built from the class itself, so it cannot drift from the code: the knobs and their
order from :func:`dataclasses.fields`, each default from the field, and each knob's meaning from
the attribute docstring written under the field in ``sparkdownpour/config.py`` (read from the
source with :mod:`ast`, since Python keeps no attribute docstrings at run time)::

    .. config-reference:: sparkdownpour.config.DownpourConfig

In a MyST page, wrap it in an ``{eval-rst}`` block.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import itertools
import textwrap
from typing import NamedTuple

from docutils import nodes
from docutils.parsers.rst import Directive
from docutils.statemachine import StringList


class Knob(NamedTuple):
    name: str
    type: str
    default: str
    doc: str


def attribute_docs(cls: type) -> dict[str, str]:
    """Map each annotated attribute of ``cls`` to the string literal written right under it."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for node, following in itertools.pairwise(body):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)):
            docs[node.target.id] = inspect.cleandoc(following.value.value)
    return docs


def _default(field: dataclasses.Field) -> str:
    if field.default is not dataclasses.MISSING:
        return repr(field.default)
    if field.default_factory is not dataclasses.MISSING:
        return repr(field.default_factory())
    return "(required)"


def config_table(cls: type) -> list[Knob]:
    """One :class:`Knob` per dataclass field of ``cls``, in declaration order."""
    docs = attribute_docs(cls)
    return [Knob(field.name, str(field.type), _default(field), docs.get(field.name, ""))
            for field in dataclasses.fields(cls)]


def table_rst(cls: type) -> list[str]:
    """``config_table(cls)`` as the lines of an RST ``list-table``."""
    lines = [".. list-table::", "   :header-rows: 1", "   :widths: 18 14 14 54", "",
             "   * - knob", "     - type", "     - default", "     - meaning"]
    for knob in config_table(cls):
        doc = knob.doc.splitlines() or [""]
        lines += [f"   * - ``{knob.name}``", f"     - ``{knob.type}``",
                  f"     - ``{knob.default}``", f"     - {doc[0]}"]
        lines += [f"       {line}" if line else "" for line in doc[1:]]
    return lines


def _resolve(path: str) -> type:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


class ConfigReference(Directive):
    required_arguments = 1
    has_content = False

    def run(self) -> list[nodes.Node]:
        cls = _resolve(self.arguments[0])
        container = nodes.container()
        source = self.state.document.current_source or "config_reference"
        self.state.nested_parse(StringList(table_rst(cls), source=source), self.content_offset,
                                container)
        return container.children


def setup(app):
    app.add_directive("config-reference", ConfigReference)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
