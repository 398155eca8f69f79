"""Checking what clients send, with field-level messages in the contract's error shape."""

from __future__ import annotations

import datetime as dt
import re

ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")  # fromisoformat alone also takes week dates
OUTCOME_RESULTS = ("clean", "fraud", "critical")
OUTCOME_FIELDS = {"declaration_id", "inspected_on", "result", "notes"}


def error(index: int | None, field: str, message: str) -> dict:
    return {"index": index, "field": field, "message": message}


def batch_errors(items, name: str, max_batch: int) -> list[dict]:
    """The whole batch's shape: a non-empty list of objects, no longer than the limit."""
    if not isinstance(items, list):
        return [error(None, name, "must be a list of objects")]
    if not 1 <= len(items) <= max_batch:
        return [error(None, name, f"must hold 1 to {max_batch} items, got {len(items)}")]
    return [error(i, name, "must be an object") for i, item in enumerate(items) if not isinstance(item, dict)]


def outcome_errors(outcomes: list[dict]) -> list[dict]:
    errors = []
    for i, outcome in enumerate(outcomes):
        for field in sorted(set(outcome) - OUTCOME_FIELDS):
            errors.append(error(i, field, "is not an outcome field"))
        declaration_id = outcome.get("declaration_id")
        if not isinstance(declaration_id, str) or not declaration_id.strip() or len(declaration_id) > 64:
            errors.append(error(i, "declaration_id", "must be a non-empty string of at most 64 characters"))
        inspected_on = outcome.get("inspected_on")
        try:
            if not isinstance(inspected_on, str) or not ISO_DATE.fullmatch(inspected_on):
                raise ValueError
            dt.date.fromisoformat(inspected_on)
        except ValueError:
            errors.append(error(i, "inspected_on", "must be a date YYYY-MM-DD"))
        if outcome.get("result") not in OUTCOME_RESULTS:
            errors.append(error(i, "result", f"must be one of {', '.join(OUTCOME_RESULTS)}"))
        notes = outcome.get("notes")
        if notes is not None and (not isinstance(notes, str) or len(notes) > 4000):
            errors.append(error(i, "notes", "must be a string of at most 4000 characters"))
    return errors
