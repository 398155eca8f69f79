"""ASGI guard in front of every API: bearer keys, loopback-only without keys, body size limit,
a deadline for receiving the body, errors in the contract's shape, and the contract's OpenAPI
document in place of BentoML's."""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging

import pydantic

from serving.openapi import contract_document
from serving.settings import Settings

OPEN_PATHS = {"/healthz", "/readyz", "/livez", "/metrics"}
DOCUMENT_PATH = "/docs.json"  # where BentoML's Swagger UI and API fuzzers look for it
DEFAULT_BODY_TIMEOUT_SECONDS = 10.0
DEFAULT_MAX_BATCH = 1000


def _is_loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _send_json(send, status: int, payload: dict) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _send_error(send, status: int, field: str, message: str) -> None:
    await _send_json(send, status, {"errors": [{"index": None, "field": field, "message": message}]})


def framework_errors(body: bytes) -> list[dict]:
    """BentoML's request parsing errors (pydantic's `detail` list) as contract field errors."""
    try:
        detail = json.loads(body).get("detail") or []
    except (ValueError, AttributeError):
        detail = []
    errors = []
    for item in detail if isinstance(detail, list) else []:
        location = [part for part in item.get("loc", []) if part not in ("body",)]
        index = next((part for part in location[1:] if isinstance(part, int)), None)
        field = ".".join(str(part) for part in location if not isinstance(part, int)) or "body"
        errors.append({"index": index, "field": field, "message": item.get("msg", "invalid")})
    return errors or [{"index": None, "field": "body", "message": "request body is not valid JSON"}]


class RequestGuard:
    """Keys (RISK_API_KEYS) and the body limit (RISK_MAX_BODY_BYTES) come from the settings, the
    service's or, when none are given, the environment's, so an operator sets the limit where
    the host's other knobs are set; the body deadline and the batch size the OpenAPI document
    states come from the packaged serving params."""

    def __init__(
        self,
        app,
        body_timeout_seconds: float | None = None,
        max_batch: int = DEFAULT_MAX_BATCH,
        settings: Settings | None = None,
    ):
        settings = settings or Settings.from_environment()
        self.app = app
        self.keys = [key.encode() for key in settings.api_keys]
        self.limit = settings.max_body_bytes
        self.too_large = f"request body over {self.limit} bytes"  # the 413's message, declared or streamed
        self.body_timeout = float(body_timeout_seconds or DEFAULT_BODY_TIMEOUT_SECONDS)
        self.document = contract_document(max_batch, secured=bool(self.keys))

    def _authorised(self, scope) -> bool:
        if not self.keys:
            return _is_loopback((scope.get("client") or (None,))[0])
        header = dict(scope.get("headers") or []).get(b"authorization", b"")
        scheme, _, token = header.partition(b" ")
        if scheme.lower() != b"bearer" or not token:
            return False
        # compare against every key, always, so timing does not tell which key came close
        matched = False
        for key in self.keys:
            matched |= hmac.compare_digest(token.strip(), key)
        return matched

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        if scope["path"] == DOCUMENT_PATH and scope["method"] == "GET":
            return await _send_json(send, 200, self.document)  # the contract is no secret
        if not self._authorised(scope):
            message = "missing or wrong bearer key" if self.keys else "only loopback clients without RISK_API_KEYS"
            return await _send_error(send, 401, "authorization", message)
        headers = dict(scope.get("headers") or [])
        media_type = headers.get(b"content-type", b"application/json").split(b";")[0].strip().lower()
        if media_type != b"application/json":
            # BentoML would parse a multipart or form body its own way, and fail on a bad one; 400,
            # not 415: the contract answers every body it cannot take with 400 or 422
            shown = media_type.decode("latin-1")[:100]
            return await _send_error(send, 400, "content-type", f"must be application/json, got {shown}")
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await _send_error(send, 413, "body", self.too_large)
        received = 0
        refusal: tuple[int, str] | None = None  # answered instead of the app's response

        async def limited_receive():
            """The body as the client sends it, cut short when it is too large or too slow: a
            client that trickles bytes must not hold a worker."""
            nonlocal received, refusal
            try:
                message = await asyncio.wait_for(receive(), self.body_timeout)
            except TimeoutError:
                refusal = (408, f"request body not received within {self.body_timeout:g} seconds")
                return {"type": "http.request", "body": b"", "more_body": False}
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    refusal = (413, self.too_large)
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        started = False
        rejected: list[bytes] | None = None  # body of a framework 400, rewritten when complete

        async def guarded_send(message):
            nonlocal started, rejected
            if refusal:
                if not started:
                    started = True
                    status, text = refusal
                    await _send_error(send, status, "body", text)
                return
            started = True
            if message["type"] == "http.response.start" and message["status"] == 400:
                rejected = []
                return
            if rejected is not None and message["type"] == "http.response.body":
                rejected.append(message.get("body", b""))
                if not message.get("more_body"):
                    await _send_json(send, 400, {"errors": framework_errors(b"".join(rejected))})
                return
            await send(message)

        await self.app(scope, limited_receive, guarded_send)


class QuietClientErrors(logging.Filter):
    """BentoML logs a full traceback at ERROR for every body that fails its request model: a
    client's mistake, already answered with a 400 in the contract's shape and shown in the
    access log. A hostile client could otherwise fill the log; real failures still log."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, pydantic.ValidationError)


def quiet_client_errors() -> None:
    logging.getLogger("bentoml._internal.server.http_app").addFilter(QuietClientErrors())
