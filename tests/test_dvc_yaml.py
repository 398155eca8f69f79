"""dvc.yaml lists the code each stage runs, derived from the code itself: a stage's
`python -m pipelines.X` module and, transitively, every project module it imports. A change to any
of them must make `dvc repro` rerun the stage; a module missing from `deps` leaves the stage
"up to date" while its outputs (the registered model, its metrics, the bento) are stale.

What counts as running a module:
- `import a.b` and `from a.b import c` anywhere in a module (also inside functions), resolved
  through the project's packages only (stdlib and third-party imports are not followed);
  `from . import x` resolved against the importing package; imports under `if TYPE_CHECKING:`
  do not run and are skipped;
- an import string `"package.module:Name"` (how `bentoml.build` and servers load a service);
- a path or glob literal under a project package (`"features/*.py"`, the files `bentoml.build`
  puts into the bento), which the stage reads; and the `code_paths=[...]` of an MLflow model log,
  whose folders (`"models"`) are copied into the logged model;
- a package's `__init__.py` when it holds code (an empty one runs nothing).
A dep that is a directory covers every file under it, and stands for all of them: a stage's code
deps, folders counted file by file, are exactly the files it runs, no more (a file listed but not
run reruns the stage for nothing). Each package imports only the layers below it (docs/design.md).
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

PACKAGES = ("features", "models", "serving", "pipelines", "bench")
STAGE_COMMAND = re.compile(r"^python -m (pipelines(?:\.\w+)+)(?:\s|$)")
IMPORT_STRING = re.compile(rf"^((?:{'|'.join(PACKAGES)})(?:\.\w+)*):\w+(?:\.\w+)*$")
# Files outside the packages that decide what a stage's outputs hold: the bento installs the lock.
ROOT_CODE = ("requirements.lock",)
PATH_LITERAL = re.compile(rf"^(?:(?:{'|'.join(PACKAGES)})/[\w*?./-]+|{'|'.join(map(re.escape, ROOT_CODE))})$")


def _stages() -> dict[str, dict]:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def module_file(name: str) -> Path | None:
    """The project file a dotted module name loads, None outside the project's packages."""
    parts = name.split(".")
    if parts[0] not in PACKAGES:
        return None
    base = REPO.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _holds_code(path: Path) -> bool:
    body = ast.parse(path.read_text()).body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # a docstring runs nothing
    return bool(body)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Uses(ast.NodeVisitor):
    """The module names and project files one module's code uses."""

    def __init__(self, path: Path):
        self.path = path
        self.package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
        if path.name == "__init__.py":
            self.package = ".".join(path.relative_to(REPO).parts[:-1])
        self.modules: set[str] = set()
        self.files: set[Path] = set()

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            for statement in node.orelse:
                self.visit(statement)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.modules.add(alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            anchor = self.package.split(".")[: len(self.package.split(".")) - (node.level - 1)]
            base = ".".join([*anchor, node.module] if node.module else anchor)
        else:
            base = node.module or ""
        self.modules.add(base)
        for alias in node.names:
            self.modules.add(f"{base}.{alias.name}")  # kept only where it is a module

    def visit_keyword(self, node: ast.keyword) -> None:
        if node.arg == "code_paths" and isinstance(node.value, (ast.List, ast.Tuple)):
            for item in node.value.elts:
                if isinstance(item, ast.Constant) and isinstance(item.value, str):
                    self._files_at(item.value)
        self.generic_visit(node)

    def _files_at(self, pattern: str) -> None:
        target = REPO / pattern
        matches = target.rglob("*") if target.is_dir() else REPO.glob(pattern)
        self.files.update(p for p in matches if p.is_file() and "__pycache__" not in p.parts)

    def visit_Constant(self, node: ast.Constant) -> None:
        if not isinstance(node.value, str):
            return
        if match := IMPORT_STRING.match(node.value):
            self.modules.add(match.group(1))
        elif PATH_LITERAL.match(node.value):
            self._files_at(node.value)


@cache
def _direct(path: Path) -> tuple[frozenset[Path], frozenset[Path]]:
    """The project modules one module imports, and the project files it reads (copies)."""
    uses = _Uses(path)
    uses.visit(ast.parse(path.read_text(), filename=str(path)))
    imported: set[Path] = set()
    for name in uses.modules:
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__.py and a/b/__init__.py
            file = module_file(".".join(parts[:depth]))
            if file is not None and (file.name != "__init__.py" or _holds_code(file)):
                imported.add(file)
    return frozenset(imported), frozenset(uses.files)


def stage_code(module: str) -> set[Path]:
    """Every project file a `python -m module` run imports (transitively) or reads. A file it only
    reads or copies (a glob into the bento) is not followed: copying runs none of its imports."""
    entry = module_file(module)
    assert entry is not None, f"{module}: no such module in the project"
    ran: set[Path] = set()
    read: set[Path] = set()
    todo = [entry]
    while todo:
        path = todo.pop()
        if path in ran:
            continue
        ran.add(path)
        imported, files = _direct(path)
        todo.extend(imported)
        read.update(files)
    return ran | read


def listed_code(deps: list[str]) -> set[Path]:
    """The project files a stage's deps name: files under the project's packages (and ROOT_CODE),
    a directory standing for every file under it (as DVC hashes it, less what .dvcignore leaves out)."""
    files: set[Path] = set()
    for dep in deps:
        path = REPO / dep.rstrip("/")
        if dep.split("/")[0] not in PACKAGES and dep not in ROOT_CODE:
            continue
        if path.is_dir():
            files.update(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
        else:
            files.add(path)
    return files


def _covered(file: Path, deps: list[str]) -> bool:
    relative = file.relative_to(REPO)
    for dep in deps:
        dep_path = Path(dep.rstrip("/"))
        if relative == dep_path or dep_path in relative.parents:
            return True
    return False


def _command_module(stage: dict) -> str:
    match = STAGE_COMMAND.match(stage["cmd"])
    assert match, f"cmd {stage['cmd']!r} is not `python -m pipelines.<stage>`: this test cannot follow it"
    return match.group(1)


STAGES = _stages()


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_stage_lists_the_code_it_runs(name):
    stage = STAGES[name]
    deps = [str(dep) for dep in stage.get("deps", [])]
    missing = sorted(str(f.relative_to(REPO)) for f in stage_code(_command_module(stage)) if not _covered(f, deps))
    assert not missing, f"stage {name} runs these project files but its deps in dvc.yaml do not list them: {missing}"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_no_stage_lists_code_it_does_not_run(name):
    """A listed source file the stage never runs makes `dvc repro` rerun it for nothing."""
    stage = STAGES[name]
    runs = {str(f.relative_to(REPO)) for f in stage_code(_command_module(stage))}
    listed = [
        str(dep) for dep in stage.get("deps", []) if str(dep).endswith(".py") and str(dep).split("/")[0] in PACKAGES
    ]
    assert not [dep for dep in listed if dep not in runs], f"stage {name} lists code it does not run"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_stage_lists_exactly_the_code_it_runs(name):
    """Both directions at once, a directory dep counted file by file: a folder listed for a stage
    that runs only part of it (`models` for featurize) reruns the stage for every other file's
    edit."""
    stage = STAGES[name]
    runs = stage_code(_command_module(stage))
    listed = listed_code([str(dep) for dep in stage.get("deps", [])])

    def names(files: set[Path]) -> list[str]:
        return sorted(str(f.relative_to(REPO)) for f in files)

    assert names(listed) == names(runs), (
        f"stage {name}: deps in dvc.yaml name {names(listed - runs)} which it does not run, "
        f"and miss {names(runs - listed)} which it runs"
    )


# Which project packages each package's modules may import (docs/design.md, "Where things live").
LAYERS = {
    "features": {"features"},
    "models": {"features", "models"},
    "serving": {"features", "models", "serving"},
    "pipelines": {"features", "models", "serving", "pipelines"},
}


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_each_package_imports_only_the_layers_below_it(package):
    """features/ computes features with no model code, so featurize reruns for no training edit."""
    crossing = {
        str(path.relative_to(REPO)): sorted(
            str(f.relative_to(REPO)) for f in _direct(path)[0] if f.relative_to(REPO).parts[0] not in LAYERS[package]
        )
        for path in sorted((REPO / package).glob("*.py"))
    }
    assert not {module: files for module, files in crossing.items() if files}


def test_featurize_runs_no_model_code():
    runs = {str(f.relative_to(REPO)) for f in stage_code("pipelines.featurize")}
    assert "features/cluster.py" in runs and "features/partitioned.py" in runs
    assert not [name for name in runs if name.startswith("models/")]
    assert not [dep for dep in STAGES["featurize"]["deps"] if str(dep).startswith("models")]


def test_the_walk_follows_imports_strings_and_globs():
    # pipelines.package loads the service by its import string and copies features/*.py into the bento
    package = {str(f.relative_to(REPO)) for f in stage_code("pipelines.package")}
    assert {"serving/service.py", "serving/loading.py", "models/registry.py", "features/schema.py"} <= package
    assert "serving/risk_profiles.yaml" in package
    assert "requirements.lock" in package  # the bento's python packages
    assert "features/__init__.py" in package  # copied into the bento by the "features/*.py" glob
    # train logs its model with code_paths=["features", "models"]: every file there goes into it
    train = {str(f.relative_to(REPO)) for f in stage_code("pipelines.train")}
    assert {"models/tuning.py", "models/reports.py", "features/adapters.py"} <= train


def test_a_directory_dep_covers_its_files():
    assert REPO / "features/schema.py" in listed_code(["features", "data/raw"])
    assert not [p for p in listed_code(["features/"]) if p.suffix == ".pyc"]
    assert listed_code(["data/raw/df_syn_train_eng.csv"]) == set()  # data, not code
    assert _covered(REPO / "features/schema.py", ["features"])
    assert _covered(REPO / "features/schema.py", ["features/"])
    assert not _covered(REPO / "features/schema.py", ["feat"])
    assert not _covered(REPO / "features/schema.py", ["models"])
