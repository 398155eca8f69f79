"""`make fuzz`: schemathesis against the packaged champion's own OpenAPI document, with every
check it has and many more examples than the bounded run in the test suite (tests/e2e/test_fuzz.py).

    python -m bench.fuzz [--examples 500] [--seed N]

The service runs on loopback with a throwaway key (so the authentication checks run too) and a
temporary audit store. Exit 0 only when schemathesis found nothing, the service answered no 5xx
and logged no traceback, and it is still ready at the end; 2 when there is no packaged bento.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

from bench.servers import BIN, REPO, packaged_bento, serve_packaged, stop_servers, wait_ready

HOOKS = "bench.fuzz"  # SCHEMATHESIS_HOOKS: `st run` imports this module, which registers the formats


def register_formats() -> None:
    """The formats of the service's document that JSON Schema cannot state: `iso6346`, a
    container number whose check digit matches (serving/openapi.py). Without it schemathesis
    would send numbers of the right pattern and a wrong check digit as valid data."""
    import schemathesis
    from hypothesis import strategies as st

    from features.schema import iso6346_check_digit

    first_ten = st.builds(
        lambda owner, category, serial: owner + category + serial,
        st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=3, max_size=3),
        st.sampled_from("UJZ"),
        st.text("0123456789", min_size=6, max_size=6),
    )
    schemathesis.openapi.format("iso6346", first_ten.map(lambda ten: ten + str(iso6346_check_digit(ten))))


def schemathesis_env(env: dict[str, str]) -> dict[str, str]:
    """`env` for `st run` with this module as its hooks, importable from the repository."""
    path = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return {**env, "SCHEMATHESIS_HOOKS": HOOKS, "PYTHONPATH": path}


if os.environ.get("SCHEMATHESIS_HOOKS") == HOOKS:
    register_formats()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=500, help="examples per operation and phase")
    parser.add_argument("--seed", type=int, default=secrets.randbelow(2**32), help="default: a new one, printed")
    parser.add_argument("--bentoml-home", type=Path, default=Path(os.environ.get("BENTOML_HOME") or REPO / ".bentoml"))
    args = parser.parse_args()
    bento = packaged_bento(args.bentoml_home.resolve())
    if bento is None:
        print(f"no packaged service in {args.bentoml_home}: run `make run` first", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="customs-risk-fuzz-"))
    key = secrets.token_urlsafe(24)
    server = serve_packaged(args.bentoml_home.resolve(), bento, tmp, api_key=key)
    try:
        wait_ready(server)
        base = server.base
        print(f"fuzzing {bento} on {base}: {args.examples} examples per operation, seed {args.seed}", flush=True)
        fuzz = subprocess.run(
            [
                str(BIN / "st"),
                "run",
                f"{base}/docs.json",
                "--checks",
                "all",
                "--header",
                f"Authorization: Bearer {key}",
                "--max-examples",
                str(args.examples),
                "--seed",
                str(args.seed),
                "--request-timeout",
                "180",
                "--workers",
                "1",
            ],
            cwd=tmp,
            env=schemathesis_env(dict(os.environ)),
        )
        ready = httpx.get(server.ready_url, timeout=10).status_code == 200
    finally:
        stop_servers([server])
    log = server.log.read_text()
    server_errors = len(re.findall(r"status=5[0-9][0-9]", log))
    tracebacks = log.count("Traceback")
    print(
        f"\nschemathesis exit code {fuzz.returncode}; server answers 5xx: {server_errors}; "
        f"tracebacks logged: {tracebacks}; ready at the end: {ready}; server log: {server.log}"
    )
    return 0 if fuzz.returncode == 0 and not server_errors and not tracebacks and ready else 1


if __name__ == "__main__":
    sys.exit(main())
