"""docs/architecture.md's package layout matches the package tree, in both directions.

The page's first code block that starts with ``sparkdownpour/`` lists every package (``name/``)
and module (``name.py``), one a line, indented two spaces per level, each followed by a one-line
description. Packages' ``__init__.py`` files are implied; data folders (``static/``) are listed
as folders, their files are not.
"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "architecture.md"
PACKAGE = ROOT / "sparkdownpour"


def layout_block(text: str) -> list[str]:
    for block in re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE):
        lines = block.splitlines()
        if lines and lines[0].strip() == "sparkdownpour/":
            return lines
    raise AssertionError(f"{PAGE} has no code block starting with 'sparkdownpour/'")


def listed_paths(lines: list[str]) -> set[str]:
    """Paths relative to the package (``server/store.py``, ``observe/static/``) the block lists."""
    paths, stack = set(), []
    for line in lines[1:]:
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip(" "))
        assert indent % 2 == 0 and indent >= 2, f"odd indentation in {line!r}"
        depth = indent // 2 - 1
        assert depth <= len(stack), f"{line!r} is indented deeper than its folder"
        name, _, description = line.strip().partition(" ")
        assert description.strip(), f"{name} has no description on the architecture page"
        del stack[depth:]
        if name.endswith("/"):
            stack.append(name)
            paths.add("".join(stack))
        else:
            assert name.endswith(".py"), f"{name!r} is neither a module nor a folder"
            paths.add("".join(stack) + name)
    return paths


def tree_paths() -> set[str]:
    paths = set()
    for path in PACKAGE.rglob("*"):
        relative = path.relative_to(PACKAGE)
        if "__pycache__" in relative.parts:
            continue
        if path.is_dir():
            paths.add(relative.as_posix() + "/")
        elif path.suffix == ".py" and (path.name != "__init__.py" or path.parent == PACKAGE):
            paths.add(relative.as_posix())
    # A data folder's files are not listed, only the folder.
    folders = {p for p in paths if p.endswith("/")}
    data = {f for f in folders if not (PACKAGE / f / "__init__.py").exists()}
    return {p for p in paths if not any(p != d and p.startswith(d) for d in data)}


def test_architecture_page_lists_exactly_the_package_tree():
    listed = listed_paths(layout_block(PAGE.read_text()))
    real = tree_paths()
    missing = sorted(real - listed)
    stale = sorted(listed - real)
    assert not missing and not stale, (
        f"docs/architecture.md is out of step with sparkdownpour/: add {missing}, "
        f"remove {stale}")
