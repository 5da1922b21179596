"""The layering rules of docs/architecture.md, checked on the source (imports read with ast)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sparkdownpour"
MODULES = sorted(p for p in PACKAGE.rglob("*.py"))
TRAINERS = ("sparkdownpour.downpour", "sparkdownpour.sandblaster", "sparkdownpour.deepdist",
            "sparkdownpour.trainer", "sparkdownpour.driver_model", "sparkdownpour.ml",
            "sparkdownpour.session")


def imports_of(path: Path) -> set[str]:
    """Every module a file imports (at any depth: lazy imports inside functions count)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def offenders(package: str, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    found = {}
    for path in (PACKAGE / package).rglob("*.py"):
        bad = sorted(n for n in imports_of(path) if n.startswith(forbidden))
        if bad:
            found[str(path.relative_to(PACKAGE))] = bad
    return found


def test_the_replica_package_imports_no_trainer_and_no_session():
    assert offenders("replica", TRAINERS + ("pyspark.sql.session",)) == {}


@pytest.mark.parametrize("package, forbidden", [
    ("transport", ("sparkdownpour.server", "sparkdownpour.observe", "sparkdownpour.replica",
                   "sparkdownpour.lbfgs") + TRAINERS),
    ("optimizers", ("pyspark", "flask", "tensorflow", "keras", "sparkdownpour.server",
                    "sparkdownpour.transport") + TRAINERS),
    ("server", ("sparkdownpour.replica", "sparkdownpour.lbfgs") + TRAINERS),
    ("observe", ("sparkdownpour.replica", "sparkdownpour.lbfgs", "sparkdownpour.downpour",
                 "sparkdownpour.sandblaster", "sparkdownpour.ml")),
])
def test_imports_run_downward(package, forbidden):
    assert offenders(package, forbidden) == {}


def test_the_library_never_imports_its_testing_module():
    users = [str(p.relative_to(PACKAGE)) for p in MODULES
             if p.name != "testing.py" and "sparkdownpour.testing" in imports_of(p)]
    assert users == []


def test_no_module_is_over_400_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in MODULES
            if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}


def test_no_library_class_carries_a_test_hook():
    hooks = ("fail_first_attempt_after", "fail_epoch", "_replica_overrides", "_on_server_start")
    found = [f"{p.relative_to(PACKAGE)}: {h}" for p in MODULES if p.name != "testing.py"
             for h in hooks if h in p.read_text()]
    assert found == []


# What a replica's worker imports at run time (not only what the files name): a fresh interpreter
# imports each module an executor runs and must not load the driver's heavy libraries with it.
DRIVER_ONLY = ("flask", "werkzeug", "pandas", "scipy", "pyspark.ml", "tensorflow")


@pytest.mark.parametrize("module", ["sparkdownpour.replica.loop", "sparkdownpour.replica.resident",
                                    "sparkdownpour.replica.worker", "sparkdownpour.lbfgs.stage",
                                    "sparkdownpour.lbfgs.portion",
                                    "sparkdownpour.lbfgs.vector_client"])
def test_an_executor_module_loads_none_of_the_drivers_libraries(module):
    import subprocess
    import sys

    probe = (f"import sys, {module}; "
             f"print(sorted(m for m in sys.modules if m.split('.')[0] in {DRIVER_ONLY!r} "
             f"or m.startswith('pyspark.ml')))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", f"{module} loads {out.stdout.strip()}"


def test_the_public_names_still_import_from_the_package():
    import sparkdownpour
    import sparkdownpour.data
    import sparkdownpour.server

    for package in (sparkdownpour, sparkdownpour.data, sparkdownpour.server):
        for name in package.__all__:
            assert getattr(package, name) is not None, f"{package.__name__}.{name}"
        assert set(package.__all__) <= set(dir(package))
    with pytest.raises(AttributeError, match="no attribute 'Downpoor'"):
        sparkdownpour.Downpoor  # noqa: B018
