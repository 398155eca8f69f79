"""Hand-written hostile requests against the real service: each is answered with the status the
contract gives it and errors in the contract's shape, never a 5xx, and a refused request stores
nothing. The issue-8 closing note lists these cases and the answers. The service is this
module's own, with its own audit store (once a SQLite file, once a PostgreSQL database): what it
stores must not reach the outcomes loop's export."""

from __future__ import annotations

import json
from dataclasses import dataclass

import httpx
import pytest

from tests.e2e.stack import contract_example, keyed_service
from tests.postgres import STORE_KINDS, new_store, rows

pytestmark = pytest.mark.e2e

BIG = 10 * 1024 * 1024


def _declaration(**changes) -> dict:
    return {**contract_example(), **changes}


def _json(payload) -> bytes:
    return json.dumps(payload).encode()


def _score(*declarations: dict) -> bytes:
    return _json({"declarations": list(declarations)})


def _tax_rate_token(token: str) -> bytes:
    """A /score body with `token` as the tax rate's JSON text, for what json.dumps will not write."""
    return _score(_declaration(tax_rate="@@")).replace(b'"@@"', token.encode())


@dataclass(frozen=True)
class Hostile:
    name: str
    body: bytes
    status: int
    field: str | None  # the first error's field
    path: str = "/score"
    content_type: str = "application/json"


NESTED = b'{"declarations": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}"
CASES = [
    Hostile("hs6 code as a JSON number", _score(_declaration(hs6_code=440890)), 422, "hs6_code"),
    Hostile("tax rate as a string", _score(_declaration(tax_rate="8")), 422, "tax_rate"),
    Hostile("tax rate true", _score(_declaration(tax_rate=True)), 422, "tax_rate"),
    Hostile("importer as an object", _score(_declaration(importer_id={"id": "QLRUBN9"})), 422, "importer_id"),
    Hostile("declarations as an object", _json({"declarations": {"0": contract_example()}}), 400, "declarations"),
    Hostile("a declaration that is a string", _json({"declarations": ["97061800"]}), 400, "declarations"),
    Hostile("NaN", _tax_rate_token("NaN"), 422, "tax_rate"),
    Hostile("Infinity", _tax_rate_token("Infinity"), 422, "tax_rate"),
    Hostile("-Infinity", _tax_rate_token("-Infinity"), 422, "tax_rate"),
    Hostile("1e400", _tax_rate_token("1e400"), 422, "tax_rate"),
    Hostile("a 400-digit integer price", _score(_declaration(item_price=10**400)), 422, "item_price"),
    Hostile("the largest float as price", _score(_declaration(item_price=1.7976931348623157e308)), 200, None),
    Hostile("a 10 MB string", _score(_declaration(importer_id="Q" * BIG)), 413, "body"),
    Hostile("a 3 MB importer ID", _score(_declaration(importer_id="Q" * 3_000_000)), 422, "importer_id"),  # 64 at most
    Hostile("a 65-character declaration ID", _score(_declaration(declaration_id="D" * 65)), 422, "declaration_id"),
    Hostile("JSON nested 100,000 deep", NESTED, 400, "body"),
    Hostile("invalid UTF-8", _score(_declaration(importer_id="@@")).replace(b"@@", b"\xff\xfe"), 400, "body"),
    Hostile("a lone surrogate", _score(_declaration(importer_id="@@")).replace(b"@@", b"\\ud800"), 400, "body"),
    Hostile("a NUL character in an ID", _score(_declaration(importer_id="Q\x00R")), 200, None),
    Hostile("an empty declaration ID", _score(_declaration(declaration_id="")), 422, "declaration_id"),
    Hostile("a blank importer ID", _score(_declaration(importer_id=" \t")), 422, "importer_id"),
    Hostile("a null required field", _score(_declaration(importer_id=None)), 422, "importer_id"),
    Hostile("an unknown field", _score(_declaration(colour="red")), 422, "colour"),
    Hostile(
        "an unknown key beside declarations", _json({"declarations": [contract_example()], "debug": True}), 400, "debug"
    ),
    Hostile("a date in year 0001", _score(_declaration(declaration_date="0001-01-01")), 422, "declaration_date"),
    Hostile("February 30th", _score(_declaration(declaration_date="2021-02-30")), 422, "declaration_date"),
    Hostile("an empty batch", _score(), 422, "declarations"),
    Hostile(
        "a batch one over the limit",
        _score(*[_declaration(declaration_id=f"D{i}") for i in range(1001)]),
        422,
        "declarations",
    ),
    Hostile("an empty body", b"", 400, "declarations"),
    Hostile("a body of null", b"null", 400, "body"),
    Hostile("a truncated body", b'{"declarations": [', 400, "body"),
    Hostile("form-encoded", b"declarations=1", 400, "content-type", content_type="application/x-www-form-urlencoded"),
    Hostile(
        "multipart without a boundary",
        _score(contract_example()),
        400,
        "content-type",
        content_type="multipart/form-data",
    ),
    Hostile(
        "an outcome with a lone surrogate note",
        _json(
            {
                "outcomes": [
                    {"declaration_id": "97061800", "inspected_on": "2021-03-02", "result": "fraud", "notes": "@@"}
                ]
            }
        ).replace(b"@@", b"\\udfff"),
        400,
        "body",
        path="/outcomes",
    ),
    Hostile(
        "an outcome result in capitals",
        _json({"outcomes": [{"declaration_id": "97061800", "inspected_on": "2021-03-02", "result": "FRAUD"}]}),
        422,
        "result",
        path="/outcomes",
    ),
]


@pytest.fixture(scope="module", params=STORE_KINDS)
def service(workspace, tmp_path_factory, request):
    folder = tmp_path_factory.mktemp("hostile")
    with (
        new_store(request.param, folder, request) as store,
        keyed_service(workspace, folder / "serve.log", store) as service,
    ):
        yield {**service, "audit": store, "log": folder / "serve.log"}


def _decisions(service) -> int:
    return rows(service["audit"], "SELECT COUNT(*) FROM decisions")[0][0]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_a_hostile_request_gets_its_status_and_field(service, case):
    before = _decisions(service)
    response = service["client"].post(case.path, content=case.body, headers={"Content-Type": case.content_type})
    assert response.status_code == case.status, response.text[:1000]
    if case.field is None:
        assert _decisions(service) == before + 1
        return
    errors = response.json()["errors"]
    assert all(set(error) == {"index", "field", "message"} and error["message"] for error in errors)
    assert errors[0]["field"] == case.field, errors
    assert _decisions(service) == before


def test_a_repeated_declaration_is_scored_twice_and_alike(service):
    """The contract makes IDs unique in history, not within a request: a client that sends one
    declaration twice gets two identical answers, in order."""
    twice = [_declaration(declaration_id="TWICE"), _declaration(declaration_id="TWICE")]
    results = service["client"].post("/score", json={"declarations": twice}).json()["results"]
    assert [r["declaration_id"] for r in results] == ["TWICE", "TWICE"]
    assert results[0] == results[1]


def test_a_repeated_outcome_in_one_batch_keeps_the_last(service):
    outcomes = [
        {"declaration_id": "TWICE-OUTCOME", "inspected_on": "2021-03-02", "result": "fraud"},
        {"declaration_id": "TWICE-OUTCOME", "inspected_on": "2021-03-03", "result": "clean"},
    ]
    assert service["client"].post("/outcomes", json={"outcomes": outcomes}).json() == {"stored": 2}
    stored = rows(service["audit"], "SELECT inspected_on, result FROM outcomes WHERE declaration_id = 'TWICE-OUTCOME'")
    assert stored == [("2021-03-03", "clean")]


def test_methods_the_api_does_not_take_get_405(service):
    for method in ("GET", "PUT", "DELETE"):
        assert service["client"].request(method, "/score").status_code == 405


def test_the_service_is_still_ready_after_all_of_it_and_logged_no_error(service):
    assert httpx.get(f"{service['base']}/readyz", timeout=10).status_code == 200
    log = service["log"].read_text()
    assert "Traceback" not in log and "status=5" not in log
