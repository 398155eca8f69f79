"""Checking what clients send, with field-level messages in the contract's error shape. The
record's fields, limits and words are features.record's; what is here is the JSON around them
(types a frame would paper over) and the /outcomes record."""

from __future__ import annotations

import math
import re

from features.record import (
    EARLIEST_DATE,
    LARGEST_INTEGER,
    LATEST_DATE,
    MAX_ID_CHARACTERS,
    NOT_BLANK,
    NUMERIC_FIELDS,
    STRING_FIELDS,
    TOO_LONG,
    is_recovered_duty,
    parse_date,
)

MAX_NOTES_CHARACTERS = 4000
OUTCOME_RESULTS = ("clean", "fraud", "critical")
OUTCOME_FIELDS = {"declaration_id", "inspected_on", "result", "additional_duty", "notes"}
ADDITIONAL_DUTY_MESSAGE = (
    "must be a finite JSON number of at least 0 (the duty assessed beyond the declared duty), or null"
)


def error(index: int | None, field: str, message: str) -> dict:
    return {"index": index, "field": field, "message": message}


def batch_errors(items, name: str, max_batch: int) -> list[dict]:
    """The whole batch's shape: a non-empty list of objects, no longer than the limit."""
    if not isinstance(items, list):
        return [error(None, name, "must be a list of objects")]
    if not 1 <= len(items) <= max_batch:
        return [error(None, name, f"must hold 1 to {max_batch} items, got {len(items)}")]
    return [error(i, name, "must be an object") for i, item in enumerate(items) if not isinstance(item, dict)]


def declaration_type_errors(declarations: list[dict]) -> list[dict]:
    """JSON types the schema's parsing would otherwise paper over: it turns 440890 into
    "440890" and true into 1.0, which is right for a CSV file but hides a client's bug (a code
    sent as a number has already lost its leading zeros). NaN and Infinity are not JSON, though
    Python's parser takes them. A string over MAX_ID_CHARACTERS is refused here, before any
    parsing (no identifier or code is longer; a code's own format is the schema's to check).
    Nulls and unknown fields are left to the schema, which reports them as missing or unknown."""
    errors = []
    for i, declaration in enumerate(declarations):
        for field, value in declaration.items():
            if value is None:
                continue
            if field in NUMERIC_FIELDS:
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    errors.append(error(i, field, "must be a JSON number"))
                elif isinstance(value, float) and not math.isfinite(value):
                    errors.append(error(i, field, "must be a finite number (NaN and Infinity are not JSON)"))
            elif (field in STRING_FIELDS or field == "declaration_date") and not isinstance(value, str):
                errors.append(error(i, field, "must be a JSON string"))
            elif field in STRING_FIELDS and len(value) > MAX_ID_CHARACTERS:
                errors.append(error(i, field, TOO_LONG))
    return errors


def _is_date(value) -> bool:
    return isinstance(value, str) and parse_date(value)[0] is None


def _is_duty(value) -> bool:
    """Null (not reported) or a number from 0 to the largest the OpenAPI document states: true is
    no amount, and an integer past that largest number would be stored as infinity."""
    if value is None:
        return True
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if isinstance(value, int):
        return 0 <= value <= LARGEST_INTEGER
    return bool(is_recovered_duty(value))


def outcome_errors(outcomes: list[dict]) -> list[dict]:
    errors = []
    for i, outcome in enumerate(outcomes):
        for field in sorted(set(outcome) - OUTCOME_FIELDS):
            errors.append(error(i, field, "is not an outcome field"))
        declaration_id = outcome.get("declaration_id")
        if (
            not isinstance(declaration_id, str)
            or not re.search(NOT_BLANK, declaration_id)
            or len(declaration_id) > MAX_ID_CHARACTERS
        ):
            errors.append(
                error(i, "declaration_id", f"must be a non-empty string of at most {MAX_ID_CHARACTERS} characters")
            )
        if not _is_date(outcome.get("inspected_on")):
            errors.append(error(i, "inspected_on", f"must be a date YYYY-MM-DD from {EARLIEST_DATE} to {LATEST_DATE}"))
        if outcome.get("result") not in OUTCOME_RESULTS:
            errors.append(error(i, "result", f"must be one of {', '.join(OUTCOME_RESULTS)}"))
        if not _is_duty(outcome.get("additional_duty")):
            errors.append(error(i, "additional_duty", ADDITIONAL_DUTY_MESSAGE))
        notes = outcome.get("notes")
        if notes is not None and (not isinstance(notes, str) or len(notes) > MAX_NOTES_CHARACTERS):
            errors.append(error(i, "notes", f"must be a string of at most {MAX_NOTES_CHARACTERS} characters"))
    return errors
