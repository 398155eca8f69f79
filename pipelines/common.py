"""What every stage needs: params, run identity, and small file helpers."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from pipelines.paths import VALIDATED

PARAMS = Path("params.yaml")


def load_params() -> dict:
    return yaml.safe_load(PARAMS.read_text())


def write_json(path: Path, payload: dict) -> None:
    """Whole or not at all: a stage killed while writing leaves the previous file."""
    with staged_output(Path(path)) as staging:
        staging.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (subprocess.SubprocessError, FileNotFoundError):
        return "unknown"


def data_version() -> str:
    """The md5 DVC recorded for the validated history in dvc.lock: the data a run trained on."""
    lock = Path("dvc.lock")
    if not lock.exists():
        return "unknown"
    stages = yaml.safe_load(lock.read_text()).get("stages", {})
    for out in stages.get("validate", {}).get("outs", []):
        if out.get("path") == str(VALIDATED):
            return out.get("md5", "unknown")
    return "unknown"


@contextmanager
def staged_output(path: Path) -> Iterator[Path]:
    """A path to write `path` at, moved into place only when the block finishes: a stage killed
    halfway leaves the previous output (or none), never a half-written one."""
    path = Path(path)
    staging = path.with_name(f".{path.name}.partial")
    _remove(staging)
    staging.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield staging
    except BaseException:
        _remove(staging)
        raise
    retired = path.with_name(f".{path.name}.old")
    _remove(retired)
    if path.exists():
        path.rename(retired)
    staging.rename(path)
    _remove(retired)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def part_path(directory: Path, index: int) -> Path:
    """The index-th part of a partitioned Parquet output; parts sort in row order by name."""
    return Path(directory) / f"part-{index:05d}.parquet"
