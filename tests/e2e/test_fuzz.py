"""API fuzzing: schemathesis against the service's own OpenAPI document, every check it has,
with a key, on a service of its own, once on each kind of store. `make fuzz` runs the same with
many more examples."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.fuzz import schemathesis_env
from tests.e2e.stack import BIN, serve_bento
from tests.postgres import STORE_KINDS, new_store, rows

pytestmark = pytest.mark.e2e

KEY = "fuzz-key"
EXAMPLES_PER_OPERATION = 15  # bounded for the test suite; `make fuzz` runs more


@pytest.fixture(scope="module", params=STORE_KINDS)
def fuzzed(workspace, tmp_path_factory, request) -> Iterator[dict]:
    folder = tmp_path_factory.mktemp("fuzz")
    with new_store(request.param, folder, request) as store:
        yield _fuzz(workspace, folder, store)


def _fuzz(workspace: dict, folder: Path, store: Path | str) -> dict:
    env = {**workspace["env"], "RISK_API_KEYS": KEY, "RISK_AUDIT_DB": str(store)}
    with serve_bento(workspace["root"], env, folder / "serve.log") as served:
        command = [
            str(BIN / "st"),
            "run",
            f"{served.base}/docs.json",
            "--checks",
            "all",
            "--header",
            f"Authorization: Bearer {KEY}",
            "--max-examples",
            str(EXAMPLES_PER_OPERATION),
            "--seed",
            "20261128",
            "--request-timeout",
            "120",
            "--workers",
            "1",
            "--no-color",
        ]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=900, env=schemathesis_env(env), cwd=folder
        )
        alive = httpx.get(f"{served.base}/readyz", timeout=10).status_code
    return {"result": result, "alive": alive, "log": (folder / "serve.log").read_text(), "audit": store}


def test_every_check_passes_on_every_operation(fuzzed):
    result = fuzzed["result"]
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert re.search(r"Tested: 7\b", result.stdout), result.stdout[-3000:]


def test_the_fuzzer_sent_hundreds_of_requests(fuzzed):
    generated = int(re.search(r"(\d+) generated", fuzzed["result"].stdout).group(1))
    assert generated >= 300, fuzzed["result"].stdout[-3000:]


def test_no_request_crashed_the_service_or_logged_an_error(fuzzed):
    assert fuzzed["alive"] == 200
    assert "Traceback" not in fuzzed["log"]
    assert not re.search(r"status=5[0-9][0-9]", fuzzed["log"])


def test_the_key_never_reaches_the_log(fuzzed):
    assert KEY not in fuzzed["log"]


def test_what_the_fuzzer_got_scored_was_audited(fuzzed):
    assert rows(fuzzed["audit"], "SELECT count(*) FROM decisions")[0][0] > 0
