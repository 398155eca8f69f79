"""The service's OpenAPI document, written from docs/api.md and the declaration schema.

BentoML's generated document only knows `list[dict]` bodies and lists a 500 it should never
give, so clients and API fuzzers could not learn from it what a declaration is or which errors
to expect. This one is served at /docs.json instead, and states exactly what the service
accepts: the field types, formats and limits of features.record, the batch limit, and every
status code the service answers with. A fuzzer that finds the document and the service
disagreeing has found a bug in one of them.
"""

from __future__ import annotations

from typing import Any

from features.record import (
    BOUNDED_FIELDS,
    CONTAINER_NUMBER,
    COUNTRY_CODES,
    DATE_PATTERN,
    DECLARATION_FIELDS,
    HS6_CODE,
    LARGEST_NUMBER,
    MAX_ID_CHARACTERS,
    MAX_TAX_RATE,
    NOT_BLANK,
    NUMERIC_FIELDS,
    OPTIONAL_FIELDS,
    UNKNOWN_COUNTRY,
)
from models.bundle import REASONS
from serving.kpis import LANES, SOURCES
from serving.requests import MAX_NOTES_CHARACTERS, OUTCOME_RESULTS
from serving.settings import MODEL_NAME

_DATE = {"type": "string", "format": "date", "pattern": DATE_PATTERN}
_ID = {"type": "string", "pattern": NOT_BLANK, "maxLength": MAX_ID_CHARACTERS}
_NUMBER = {"type": "number", "minimum": 0, "maximum": LARGEST_NUMBER}
_COUNTRY = {
    "type": "string",
    "enum": sorted(COUNTRY_CODES),
    "description": f"ISO 3166-1 alpha-2, or {UNKNOWN_COUNTRY} for unknown or not declared",
}
# JSON Schema cannot state a check digit: `format: iso6346` names it, and `make fuzz` registers
# the format with schemathesis (bench/fuzz.py) so the numbers it sends as valid are.
ISO6346_FORMAT = "iso6346"
_CONTAINER = {
    "type": "string",
    "pattern": f"^{CONTAINER_NUMBER}$",
    "format": ISO6346_FORMAT,
    "description": "ISO 6346: owner code (3 letters), category U, J or Z, 6-digit serial, check digit (verified)",
}


def _declaration_field(field: str) -> dict:
    special: dict[str, dict[str, Any]] = {
        "declaration_date": _DATE,
        "hs6_code": {"type": "string", "pattern": f"^{HS6_CODE}$", "description": "six ASCII digits"},
        "departure_country": _COUNTRY,
        "origin_country": _COUNTRY,
        "container_number": _CONTAINER,
        "tax_rate": {**_NUMBER, "maximum": MAX_TAX_RATE, "description": "percent"},
    }
    # every identifier and code without a format of its own is text of at most MAX_ID_CHARACTERS
    schema: dict[str, Any] | None = special.get(
        field, _ID if field in BOUNDED_FIELDS else _NUMBER if field in NUMERIC_FIELDS else None
    )
    assert schema is not None, f"{field}: a declaration field the document does not describe"
    return {**schema, "nullable": True} if field in OPTIONAL_FIELDS else schema


def _errors_response(description: str) -> dict:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Errors"}}},
    }


def _operation(name: str, body: dict | None, answer: dict, description: str, secured: bool, stores: bool) -> dict:
    """`stores`: the API writes to the audit store before it answers, so it can answer 503."""
    responses = {
        "200": {"description": "OK", "content": {"application/json": {"schema": answer}}},
        "400": _errors_response("the body is not application/json of the expected shape"),
        "408": _errors_response("the body did not arrive in time"),
        "413": _errors_response("the body is over the size limit"),
        "422": _errors_response("a record is invalid: nothing was scored or stored"),
    }
    if secured:
        responses["401"] = _errors_response("missing or wrong bearer key")
    if stores:
        responses["503"] = _errors_response("the audit store cannot write: nothing was stored, retry later")
    operation: dict[str, Any] = {
        "operationId": name,
        "description": description,
        "requestBody": {
            "required": body is not None,  # /metadata takes an empty body or none
            "content": {"application/json": {"schema": body or {"type": "object", "additionalProperties": False}}},
        },
        "responses": responses,
    }
    if secured:
        operation["security"] = [{"bearer": []}]
    return {"post": operation}


def _probe(description: str) -> dict:
    return {"get": {"description": description, "responses": {"200": {"description": "OK"}}}}


def contract_document(max_batch: int, secured: bool) -> dict:
    """`secured`: API keys are configured, so every API but the probes requires one."""

    def batch(name: str, item: str) -> dict:
        return {
            "type": "object",
            "required": [name],
            "additionalProperties": False,
            "properties": {
                name: {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": max_batch,
                    "items": {"$ref": f"#/components/schemas/{item}"},
                }
            },
        }

    schemas = {
        "Declaration": {
            "type": "object",
            "required": [field for field in DECLARATION_FIELDS if field not in OPTIONAL_FIELDS],
            "additionalProperties": False,
            "properties": {field: _declaration_field(field) for field in DECLARATION_FIELDS},
        },
        "Outcome": {
            "type": "object",
            "required": ["declaration_id", "inspected_on", "result"],
            "additionalProperties": False,
            "properties": {
                "declaration_id": _ID,
                "inspected_on": _DATE,
                "result": {"type": "string", "enum": list(OUTCOME_RESULTS)},
                "additional_duty": {
                    **_NUMBER,
                    "nullable": True,
                    "description": "duty the inspection assessed beyond the declared duty (local currency); null or absent: not reported",
                },
                "notes": {"type": "string", "maxLength": MAX_NOTES_CHARACTERS, "nullable": True},
            },
        },
        "Reason": {
            "type": "object",
            "required": ["feature", "value", "contribution", "support", "text"],
            "properties": {
                "feature": {"type": "string"},
                "value": {"nullable": True, "oneOf": [{"type": "number"}, {"type": "string"}]},
                "contribution": {"type": "number", "nullable": True},  # null: a rule's or an alert's reason
                # earlier declarations behind an entity statistic; null for anything else
                "support": {"type": "integer", "nullable": True},
                "text": {"type": "string"},
            },
        },
        "Result": {
            "type": "object",
            "required": [
                "declaration_id",
                "risk_score",
                "critical_score",
                "duty_at_risk",
                "lane",
                "selected_by",
                "reasons",
            ],
            "properties": {
                "declaration_id": {"type": "string"},
                "risk_score": {"type": "number", "minimum": 0, "maximum": 1},
                "critical_score": {"type": "number", "minimum": 0, "maximum": 1},
                "duty_at_risk": {"type": "number", "minimum": 0},
                "lane": {"type": "string", "enum": list(LANES)},
                "selected_by": {"type": "string", "enum": list(SOURCES)},
                "reasons": {"type": "array", "items": {"$ref": "#/components/schemas/Reason"}},
            },
        },
        "Model": {
            "type": "object",
            "required": ["name", "version", "run_id"],
            "properties": {"name": {"type": "string"}, "version": {"type": "string"}, "run_id": {"type": "string"}},
        },
        "Errors": {
            "type": "object",
            "required": ["errors"],
            "properties": {
                "errors": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["index", "field", "message"],
                        "properties": {
                            "index": {"type": "integer", "nullable": True},
                            "field": {"type": "string"},
                            "message": {"type": "string"},
                        },
                    },
                }
            },
        },
    }
    scored = {
        "type": "object",
        "required": ["model", "results"],
        "properties": {
            "model": {"$ref": "#/components/schemas/Model"},
            "results": {"type": "array", "items": {"$ref": "#/components/schemas/Result"}},
        },
    }
    metadata = {
        "type": "object",
        "required": ["name", "version", "run_id", "training_window", "validation_metrics", "lanes", "features"],
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "run_id": {"type": "string"},
            # who put the version into service and when (models.governance); null for a bento
            # packaged before approvals were recorded
            "approved_by": {"type": "string", "nullable": True},
            "approved_at": {"type": "string", "format": "date-time", "nullable": True},
            "approval_note": {"type": "string", "nullable": True},
            "lanes": {"type": "object"},
            "features": {"type": "array", "items": {"type": "string"}},
        },
    }
    score_body = batch("declarations", "Declaration")
    score_body["properties"]["reasons"] = {
        "type": "string",
        "enum": list(REASONS),
        "default": "selected",
        "description": "which declarations carry reasons: red and yellow (selected, the default), all, or none; "
        "a rule that fired always states its reason",
    }
    document: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {
            "title": MODEL_NAME,
            "version": "1",
            "description": "Scores import declarations for customs risk targeting (docs/api.md in the customs-risk repository).",
        },
        "paths": {
            "/score": _operation(
                "score",
                score_body,
                scored,
                "Risk scores, lanes and reasons, in request order; every decision is stored before the answer.",
                secured,
                stores=True,
            ),
            "/outcomes": _operation(
                "outcomes",
                batch("outcomes", "Outcome"),
                {"type": "object", "required": ["stored"], "properties": {"stored": {"type": "integer", "minimum": 1}}},
                "Inspection results, stored durably before the answer; a later one replaces an earlier one.",
                secured,
                stores=True,
            ),
            "/metadata": _operation(
                "metadata", None, metadata, "The served model, its windows, metrics and lanes.", secured, stores=False
            ),
            "/healthz": _probe("alive"),
            "/livez": _probe("alive"),
            "/readyz": _probe("the model is loaded and the audit store answers"),
            "/metrics": _probe("Prometheus metrics"),
        },
        "components": {"schemas": schemas},
    }
    if secured:
        document["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    return document
