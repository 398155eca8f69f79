"""The README's commands that run in seconds, run as README.md writes them: its batch-scoring
commands from the root of a fresh copy of the e2e workspace (after its `dvc repro`, as after
`make run`), with only the environment the README tells a user to set (none: issue 15); its `curl`
example against the workspace's bento served as `make serve` serves it (no key, loopback); and
`dvc repro`'s package stage into the checkout's own BentoML store. The commands are read from
README.md's code blocks, so this test follows any change the README makes. Every other command
the README shows (make run, make test, make check, make simulate, customs-risk approve and
report...) is checked to be a real Makefile target, `customs-risk` command or DVC stage by
tests/test_docs.py."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from bench.servers import with_service_settings
from features.adapters import KCS, read_source
from features.schema import DECLARATION_FIELDS
from tests.conftest import REPO
from tests.e2e.stack import BIN, serve_bento
from tests.test_docs import command_lines, curl_request

pytestmark = pytest.mark.e2e

RESULT_FIELDS = ["declaration_id", "risk_score", "critical_score", "duty_at_risk", "lane", "selected_by", "reasons"]


def readme_commands(text: str, program: str) -> list[str]:
    """The commands of README.md's shell code blocks that run `program`, without their comments."""
    return [command for command in command_lines(text) if command.startswith(program)]


def test_the_score_command_is_found_in_the_readme():
    commands = readme_commands((REPO / "README.md").read_text(), ".venv/bin/customs-risk score")
    assert ".venv/bin/customs-risk score --input declarations.csv --output scored.csv" in commands, commands
    assert all(shlex.split(c)[shlex.split(c).index("--input") + 1] == "declarations.csv" for c in commands)


def _user_env(home: Path) -> dict[str, str]:
    """What a user's shell holds: PATH with the venv, HOME; no BENTOML_HOME, MLFLOW_TRACKING_URI,
    RISK_* or PYTHONPATH (the README sets none of them for these commands)."""
    env = {"PATH": f"{BIN}{os.pathsep}/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}
    assert not any(name.startswith(("BENTOML", "MLFLOW", "RISK_", "PYTHON")) for name in env)
    return env


@pytest.fixture(scope="module")
def clone(workspace, tmp_path_factory) -> Path:
    """A fresh copy of the workspace after its `dvc repro`, its `.venv` the project's (as `make run`
    leaves a clone), and a day's declarations file as the README's command reads it."""
    root = tmp_path_factory.mktemp("readme") / "customs-risk"
    shutil.copytree(
        workspace["root"],
        root,
        symlinks=True,
        ignore=lambda folder, names: ["serving"] if Path(folder) == workspace["root"] / "data" else [],
    )
    for name in ("pyproject.toml", "README.md", "Makefile"):  # a clone has them; the workspace holds only what dvc runs
        shutil.copy(REPO / name, root / name)
    (root / ".venv").symlink_to(REPO / ".venv")
    records = read_source(workspace["root"] / "data/raw/df_syn_valid_eng.csv", KCS)[DECLARATION_FIELDS].head(30)
    records.to_csv(root / "declarations.csv", index=False)
    return root


def _run(command: str, root: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return subprocess.run(
        shlex.split(command), cwd=root, env=_user_env(home), capture_output=True, text=True, timeout=600
    )


def _score_commands() -> list[str]:
    return readme_commands((REPO / "README.md").read_text(), ".venv/bin/customs-risk score")


@pytest.mark.parametrize("command", _score_commands())
def test_the_readme_score_command_works_as_written(clone, tmp_path, command):
    output = clone / shlex.split(command)[shlex.split(command).index("--output") + 1]
    output.unlink(missing_ok=True)
    result = _run(command, clone, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"BentoML store {clone.resolve() / '.bentoml'} (this checkout)" in result.stderr
    scored = pd.read_csv(output, dtype={"declaration_id": str})
    given = pd.read_csv(clone / "declarations.csv", dtype=str)
    assert set(RESULT_FIELDS) <= set(scored.columns)  # the fields of a /score result
    assert scored["declaration_id"].tolist() == given["declaration_id"].tolist()
    assert scored["lane"].isin(["red", "yellow", "green"]).all()
    assert not (tmp_path / "home" / "bentoml").exists()  # never BentoML's own default store
    assert not output.with_name(f"{output.stem}.rejected{output.suffix}").exists()


def test_the_readme_score_command_keeps_the_valid_rows_of_a_partly_bad_file(clone, tmp_path):
    """The README's command on a day's file with bad rows among good ones, an unknown country and
    a container among them: exit 3, the good rows scored, the bad ones in scored.rejected.csv."""
    (command,) = _score_commands()[:1]
    records = pd.read_csv(clone / "declarations.csv", dtype=str, keep_default_na=False, na_values=[""])
    records.loc[2, "hs6_code"] = "4408"
    records.loc[5, "importer_id"] = "Q" * 65
    records.loc[7, "origin_country"] = "ZZ"
    records["container_number"] = None
    records.loc[8, "container_number"] = "CSQU3054383"
    records.loc[9, "container_number"] = "CSQU3054384"
    original = (clone / "declarations.csv").read_bytes()
    records.to_csv(clone / "declarations.csv", index=False)
    try:
        result = _run(command, clone, tmp_path)
    finally:
        (clone / "declarations.csv").write_bytes(original)
    assert result.returncode == 3, result.stdout + result.stderr
    output = clone / shlex.split(command)[shlex.split(command).index("--output") + 1]
    scored = pd.read_csv(output, dtype={"declaration_id": str})
    kept = [i for i in range(len(records)) if i not in (2, 5, 9)]
    assert scored["declaration_id"].tolist() == records["declaration_id"].iloc[kept].tolist()
    rejected = pd.read_csv(output.with_name(f"{output.stem}.rejected{output.suffix}"), dtype=str)
    assert rejected[["row", "field"]].values.tolist() == [
        ["3", "hs6_code"],
        ["6", "importer_id"],
        ["10", "container_number"],
    ]


def test_the_readme_retraining_packages_into_the_checkouts_store(clone, tmp_path):
    """README "Retraining": `dvc repro` with the venv active and nothing else set. The package
    stage must leave the champion where `customs-risk` and the service look (the checkout's
    .bentoml), not in BentoML's own default under the user's home."""
    assert "dvc repro" in readme_commands((REPO / "README.md").read_text(), "dvc repro")
    result = _run("dvc repro --force --single-item package", clone, tmp_path)  # as `dvc repro` runs it
    assert result.returncode == 0, result.stdout + result.stderr
    bento = json.loads((clone / "data/model/package.json").read_text())["bento"]
    name, version = bento.split(":")
    assert (clone / ".bentoml" / "bentos" / name / version).is_dir(), result.stdout
    assert f"in {clone.resolve() / '.bentoml'}" in result.stdout
    assert not (tmp_path / "home" / "bentoml").exists()


@pytest.fixture(scope="module")
def served(workspace, tmp_path_factory):
    """The workspace's bento served as `make serve` serves it without RISK_API_KEYS (loopback only,
    no key), with an audit store of its own so the other modules' stores see nothing of it."""
    folder = tmp_path_factory.mktemp("readme-serve")
    env = with_service_settings(workspace["env"], audit_db=folder / "audit.db")
    assert "RISK_API_KEYS" not in env
    with serve_bento(workspace["root"], env, folder / "serve.log") as server:
        yield server


def _curl_commands() -> list[str]:
    return readme_commands((REPO / "README.md").read_text(), "curl ")


def test_the_readme_shows_one_curl_example_and_it_scores():
    (command,) = _curl_commands()
    assert curl_request(command)["path"] == "/score"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@pytest.mark.parametrize("command", _curl_commands())
def test_the_readme_curl_example_works_as_written(served, tmp_path, command):
    """The README's curl command, its `localhost:3000` pointed at the served port, nothing else changed."""
    port = served.base.rsplit(":", 1)[1]
    words = [word.replace("localhost:3000", f"127.0.0.1:{port}") for word in shlex.split(command)]
    assert words != shlex.split(command), "the README's example calls localhost:3000, where `make serve` serves"
    result = subprocess.run([*words, "--write-out", "\n%{http_code}"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    body, status = result.stdout.rsplit("\n", 1)
    assert status == "200", body
    answer = json.loads(body)
    sent = json.loads(curl_request(command)["body"])["declarations"]
    assert [r["declaration_id"] for r in answer["results"]] == [d["declaration_id"] for d in sent]
    assert set(RESULT_FIELDS) <= set(answer["results"][0])
    assert answer["results"][0]["lane"] in ("red", "yellow", "green")
    assert answer["model"]["name"] == "customs-risk"
