"""RequestGuard as ASGI middleware around a tiny Starlette app: keys, loopback, body limit, and
framework errors rewritten to the contract's error shape (docs/api.md)."""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import sys
from types import SimpleNamespace

import httpx
import pydantic
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route

from serving.http import QuietClientErrors, RequestGuard, framework_errors
from serving.settings import DEFAULT_MAX_BODY_BYTES

LOOPBACK = ("127.0.0.1", 40000)
REMOTE = ("10.20.30.40", 40000)
PYDANTIC_400 = {
    "error": "2 validation errors for Input",
    "detail": [
        {"type": "dict_type", "loc": ["declarations", 2], "msg": "Input should be a valid dictionary"},
        {"type": "missing", "loc": ["body", "outcomes", 0, "result"], "msg": "Field required"},
    ],
}


class App:
    """A tiny service that records what reached it."""

    def __init__(self):
        self.calls: list[tuple[str, int]] = []

        async def echo(request: Request):
            body = await request.body()
            self.calls.append((request.url.path, len(body)))
            return JSONResponse({"received": len(body)})

        async def probe(request: Request):
            self.calls.append((request.url.path, 0))
            return PlainTextResponse("ok")

        async def framework_400(request: Request):
            await request.body()
            return JSONResponse(PYDANTIC_400, status_code=400)

        async def streamed_400(request: Request):
            payload = json.dumps(PYDANTIC_400).encode()

            async def parts():
                yield payload[:10]
                yield payload[10:]

            return StreamingResponse(parts(), status_code=400, media_type="application/json")

        async def not_json_400(request: Request):
            return PlainTextResponse("Bad Request", status_code=400)

        async def contract_422(request: Request):
            return JSONResponse({"errors": [{"index": 0, "field": "hs6_code", "message": "bad"}]}, status_code=422)

        self.app = Starlette(
            routes=[
                Route("/score", echo, methods=["POST"]),
                Route("/healthz", probe),
                Route("/readyz", probe),
                Route("/metrics", probe),
                Route("/framework400", framework_400, methods=["POST"]),
                Route("/streamed400", streamed_400, methods=["POST"]),
                Route("/notjson400", not_json_400, methods=["POST"]),
                Route("/reject", contract_422, methods=["POST"]),
            ]
        )


@pytest.fixture
def service():
    return App()


def _request(app, method: str, path: str, client=LOOPBACK, **kwargs) -> httpx.Response:
    async def go():
        transport = httpx.ASGITransport(app=app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as http:
            return await http.request(method, path, **kwargs)

    return asyncio.run(go())


def _guard(service, monkeypatch, keys: str | None = None, limit: int | None = None) -> RequestGuard:
    if keys is None:
        monkeypatch.delenv("RISK_API_KEYS", raising=False)
    else:
        monkeypatch.setenv("RISK_API_KEYS", keys)
    if limit is None:
        monkeypatch.delenv("RISK_MAX_BODY_BYTES", raising=False)
    else:
        monkeypatch.setenv("RISK_MAX_BODY_BYTES", str(limit))
    return RequestGuard(service.app)


def _assert_contract_error(response: httpx.Response, status: int, field: str) -> None:
    assert response.status_code == status
    body = response.json()
    assert set(body) == {"errors"}
    assert len(body["errors"]) >= 1
    for item in body["errors"]:
        assert set(item) == {"index", "field", "message"}
        assert isinstance(item["message"], str) and item["message"]
    assert body["errors"][0]["field"] == field


# --- keys ----------------------------------------------------------------------------------------


def test_missing_key_is_401(service, monkeypatch):
    guard = _guard(service, monkeypatch, keys="k1,k2")
    response = _request(guard, "POST", "/score", json={"declarations": []})
    _assert_contract_error(response, 401, "authorization")
    assert response.headers["www-authenticate"] == "Bearer"
    assert service.calls == []


@pytest.mark.parametrize(
    "header", ["Bearer k3", "Bearer k", "Bearer k1k2", "Bearer k1,k2", "Basic k1", "Bearer ", "k1", "Token k2"]
)
def test_wrong_key_is_401_in_the_contract_shape(service, monkeypatch, header):
    guard = _guard(service, monkeypatch, keys="k1,k2")
    response = _request(guard, "POST", "/score", json={}, headers={"Authorization": header})
    _assert_contract_error(response, 401, "authorization")
    assert response.json()["errors"][0]["index"] is None
    assert service.calls == []


@pytest.mark.parametrize("key", ["k1", "k2"])
@pytest.mark.parametrize("client", [LOOPBACK, REMOTE])
def test_either_key_passes_from_any_client(service, monkeypatch, key, client):
    guard = _guard(service, monkeypatch, keys=" k1 , k2 ")
    response = _request(
        guard, "POST", "/score", client=client, content=b"12345", headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200
    assert response.json() == {"received": 5}
    assert service.calls == [("/score", 5)]


def test_keys_are_required_from_loopback_too(service, monkeypatch):
    guard = _guard(service, monkeypatch, keys="k1")
    assert _request(guard, "POST", "/score", client=LOOPBACK, json={}).status_code == 401


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
@pytest.mark.parametrize("keys", ["k1,k2", None])
def test_probes_need_no_key(service, monkeypatch, path, keys):
    guard = _guard(service, monkeypatch, keys=keys)
    response = _request(guard, "GET", path, client=REMOTE)
    assert response.status_code == 200
    assert response.text == "ok"


# --- no keys: loopback only ----------------------------------------------------------------------


@pytest.mark.parametrize("client", [REMOTE, ("192.168.1.5", 1), ("testclient", 50000), ("2001:db8::1", 1)])
def test_without_keys_a_remote_client_is_401(service, monkeypatch, client):
    guard = _guard(service, monkeypatch, keys=None)
    response = _request(guard, "POST", "/score", client=client, json={})
    _assert_contract_error(response, 401, "authorization")
    assert "loopback" in response.json()["errors"][0]["message"]
    assert service.calls == []


@pytest.mark.parametrize("client", [LOOPBACK, ("127.0.0.2", 1), ("::1", 1)])
def test_without_keys_a_loopback_client_passes(service, monkeypatch, client):
    guard = _guard(service, monkeypatch, keys=" , ")  # blank keys are no keys
    response = _request(guard, "POST", "/score", client=client, content=b"abc")
    assert response.status_code == 200
    assert response.json() == {"received": 3}


def test_a_missing_client_address_is_not_loopback(service, monkeypatch):
    guard = _guard(service, monkeypatch, keys=None)
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "path": "/score", "method": "POST", "headers": [], "client": None}
    asyncio.run(guard(scope, receive, send))
    assert sent[0]["status"] == 401


# --- body limit ----------------------------------------------------------------------------------


def test_default_body_limit(service, monkeypatch):
    assert _guard(service, monkeypatch).limit == DEFAULT_MAX_BODY_BYTES


def test_body_at_the_limit_passes(service, monkeypatch):
    guard = _guard(service, monkeypatch, limit=100)
    response = _request(guard, "POST", "/score", content=b"x" * 100)
    assert response.status_code == 200
    assert response.json() == {"received": 100}


def test_declared_body_over_the_limit_is_413_before_the_app(service, monkeypatch):
    guard = _guard(service, monkeypatch, limit=100)
    response = _request(guard, "POST", "/score", content=b"x" * 101)
    _assert_contract_error(response, 413, "body")
    assert service.calls == []


def _chunks(size: int, count: int):
    async def stream():
        for _ in range(count):
            yield b"y" * size

    return stream()


def test_streamed_body_over_the_limit_is_413(service, monkeypatch):
    guard = _guard(service, monkeypatch, limit=100)
    response = _request(guard, "POST", "/score", content=_chunks(40, 5))
    _assert_contract_error(response, 413, "body")
    # the app never saw more than the limit
    assert all(size <= 100 for _, size in service.calls)


def test_streamed_body_under_the_limit_passes_whole(service, monkeypatch):
    guard = _guard(service, monkeypatch, limit=100)
    response = _request(guard, "POST", "/score", content=_chunks(30, 3))
    assert response.status_code == 200
    assert response.json() == {"received": 90}


def test_limit_applies_with_keys_too(service, monkeypatch):
    guard = _guard(service, monkeypatch, keys="k1", limit=10)
    headers = {"Authorization": "Bearer k1"}
    assert _request(guard, "POST", "/score", client=REMOTE, content=b"x" * 11, headers=headers).status_code == 413
    assert _request(guard, "POST", "/score", client=REMOTE, content=_chunks(6, 2), headers=headers).status_code == 413


# --- the service's guard: its limit is RISK_MAX_BODY_BYTES ---------------------------------------

PACKAGED = {  # a champion's serving params, as pipelines.package stores them; not its body limit
    "max_batch": 1000,
    "max_reasons": 3,
    "max_body_bytes": 2000,
    "timeout_seconds": 60,
    "body_timeout_seconds": 10,
    "drift_window": 1000,
}


@pytest.fixture
def served_guard(service, monkeypatch):
    """The guard serving.service puts in front of its APIs, from the module imported as
    `bentoml serve` imports it (the environment read then), with a stand-in for the packaged
    champion whose serving params are PACKAGED; the module is forgotten after the test."""
    import serving
    import serving.loading

    champion = SimpleNamespace(tag="customs-risk:fake", info=SimpleNamespace(metadata={"serving": PACKAGED}))
    monkeypatch.setattr(serving.loading, "packaged_champion", lambda tag: champion)
    monkeypatch.setattr(serving.loading, "model_tag", lambda settings: "customs-risk:fake")
    monkeypatch.delenv("RISK_API_KEYS", raising=False)
    monkeypatch.delitem(sys.modules, "serving.service", raising=False)  # put back after the test
    monkeypatch.setattr(serving, "service", getattr(serving, "service", None), raising=False)

    def guard() -> RequestGuard:
        sys.modules.pop("serving.service", None)
        module = importlib.import_module("serving.service")
        [(middleware, options)] = module.CustomsRisk.middlewares
        return middleware(service.app, **options)

    yield guard
    sys.modules.pop("serving.service", None)


def test_risk_max_body_bytes_sets_the_413_limit_of_the_service(served_guard, monkeypatch):
    monkeypatch.setenv("RISK_MAX_BODY_BYTES", "100")
    guard = served_guard()
    assert _request(guard, "POST", "/score", content=b"x" * 100).status_code == 200
    _assert_contract_error(_request(guard, "POST", "/score", content=b"x" * 101), 413, "body")
    _assert_contract_error(_request(guard, "POST", "/score", content=_chunks(40, 3)), 413, "body")
    assert "over 100 bytes" in _request(guard, "POST", "/score", content=b"x" * 101).json()["errors"][0]["message"]
    monkeypatch.setenv("RISK_MAX_BODY_BYTES", "5000")
    assert _request(served_guard(), "POST", "/score", content=b"x" * 5000).status_code == 200
    monkeypatch.delenv("RISK_MAX_BODY_BYTES")
    assert served_guard().limit == DEFAULT_MAX_BODY_BYTES


# --- framework errors ----------------------------------------------------------------------------


def test_framework_400_is_rewritten_to_contract_errors(service, monkeypatch):
    guard = _guard(service, monkeypatch)
    for path in ("/framework400", "/streamed400"):
        response = _request(guard, "POST", path, json={"declarations": [{}, {}, 3]})
        assert response.status_code == 400
        assert response.json() == {
            "errors": [
                {"index": 2, "field": "declarations", "message": "Input should be a valid dictionary"},
                {"index": 0, "field": "outcomes.result", "message": "Field required"},
            ]
        }
        assert int(response.headers["content-length"]) == len(response.content)


def test_a_400_that_is_not_json_becomes_a_body_error(service, monkeypatch):
    guard = _guard(service, monkeypatch)
    response = _request(guard, "POST", "/notjson400", content=b"{")
    _assert_contract_error(response, 400, "body")
    assert response.json()["errors"][0]["index"] is None


def test_other_statuses_pass_through_unchanged(service, monkeypatch):
    guard = _guard(service, monkeypatch)
    response = _request(guard, "POST", "/reject", json={})
    assert response.status_code == 422
    assert response.json() == {"errors": [{"index": 0, "field": "hs6_code", "message": "bad"}]}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {"detail": [{"loc": ["body", "declarations", 4, "hs6_code"], "msg": "bad code"}]},
            [{"index": 4, "field": "declarations.hs6_code", "message": "bad code"}],
        ),
        (
            {"detail": [{"loc": ["declarations"], "msg": "Field required"}]},
            [{"index": None, "field": "declarations", "message": "Field required"}],
        ),
        (
            {"detail": [{"loc": ["body"], "msg": "Invalid JSON"}]},
            [{"index": None, "field": "body", "message": "Invalid JSON"}],
        ),
        (
            {"detail": [{"loc": ["outcomes", 7]}]},
            [{"index": 7, "field": "outcomes", "message": "invalid"}],
        ),
    ],
)
def test_framework_errors_maps_pydantic_locations(body, expected):
    assert framework_errors(json.dumps(body).encode()) == expected


@pytest.mark.parametrize(
    "body", [b"", b"not json", b"[1, 2]", b'{"detail": "oops"}', b'[{"error": "bad input"}]', b"{}"]
)
def test_framework_errors_falls_back_to_one_body_error(body):
    errors = framework_errors(body)
    assert errors == [{"index": None, "field": "body", "message": "request body is not valid JSON"}]


# --- content type and the OpenAPI document -------------------------------------------------------


@pytest.mark.parametrize("content_type", ["multipart/form-data", "application/x-www-form-urlencoded", "text/plain"])
def test_a_body_that_is_not_json_is_400_before_the_app(service, monkeypatch, content_type):
    guard = _guard(service, monkeypatch)
    response = _request(guard, "POST", "/score", content=b"{}", headers={"Content-Type": content_type})
    _assert_contract_error(response, 400, "content-type")
    assert content_type in response.json()["errors"][0]["message"]
    assert service.calls == []


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON", None]
)
def test_json_or_no_content_type_passes(service, monkeypatch, content_type):
    guard = _guard(service, monkeypatch)
    headers = {"Content-Type": content_type} if content_type else {}
    assert _request(guard, "POST", "/score", content=b"{}", headers=headers).status_code == 200


@pytest.mark.parametrize("keys", [None, "k1"])
def test_the_contract_document_replaces_the_framework_one_and_needs_no_key(service, monkeypatch, keys):
    guard = _guard(service, monkeypatch, keys=keys)
    document = _request(guard, "GET", "/docs.json", client=REMOTE).json()
    assert set(document["paths"]) >= {"/score", "/outcomes", "/metadata", "/healthz", "/readyz"}
    assert ("securitySchemes" in document["components"]) is (keys is not None)
    assert service.calls == []


def _record(error: BaseException) -> logging.LogRecord:
    try:
        raise error
    except BaseException:  # noqa: BLE001 - any error, as the framework's logger receives it
        return logging.LogRecord(
            "bentoml", logging.ERROR, __file__, 1, "Exception on /score [POST]", (), sys.exc_info()
        )


def test_a_client_validation_error_is_not_logged_as_a_server_error():
    class Body(pydantic.BaseModel):
        declarations: list[dict]

    with pytest.raises(pydantic.ValidationError) as invalid:
        Body.model_validate({"declarations": 3})
    assert QuietClientErrors().filter(_record(invalid.value)) is False
    assert QuietClientErrors().filter(_record(RuntimeError("a real failure"))) is True
