"""`customs-risk report`: targeting performance of a period read back from the audit store
(docs/report.md, CONTRACT section 4): OUTPUT/kpis.json (serving.kpis) and OUTPUT/index.html
(serving.report_page).

The store is opened read-only (SQLite `mode=ro`, a PostgreSQL READ ONLY transaction): the report
never writes to it, and reading it beside a running service neither blocks the service nor
changes it. A period selects decisions by their declaration's `declaration_date` (both days
included); where a declaration was scored more than once its latest decision (the highest row
id) counts."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from serving.audit import AuditStoreUnavailable, reading, reason, record_field, table_columns
from serving.kpis import Reference, drift, kpis, validation_scores
from serving.report_page import render_html
from serving.settings import CHECKOUT_MATRIX, CHECKOUT_PARAMS, MODEL_NAME, masked

LOCK_TIMEOUT_SECONDS = 5.0

# what the report reads of each table; a store without one of them is from an older release
REQUIRED_COLUMNS = {
    "decisions": ("id", "declaration_id", "scored_at", "model_version", "record", "risk_score", "lane", "selected_by"),
    "outcomes": ("declaration_id", "inspected_on", "result", "received_at"),
}

PERIOD_DECISIONS = """
SELECT d.id, d.declaration_id, d.scored_at, d.model_version, d.record, d.risk_score, d.lane, d.selected_by,
       {mode} AS lane_thresholds, substr({declared}, 1, 10) AS declaration_date,
       o.result AS outcome, o.inspected_on, o.received_at, {duty} AS additional_duty
FROM decisions d
JOIN (SELECT declaration_id, MAX(id) AS id FROM decisions GROUP BY declaration_id) latest ON latest.id = d.id
LEFT JOIN outcomes o ON o.declaration_id = d.declaration_id
WHERE substr({declared}, 1, 10) BETWEEN :since AND :until
ORDER BY d.id
"""
DATE_RANGE = "SELECT MIN(substr({declared}, 1, 10)), MAX(substr({declared}, 1, 10)), COUNT(*) FROM decisions d"


class ReportError(RuntimeError):
    """The report cannot be made: a message for a person, no traceback."""


# --- reading the store -------------------------------------------------------------------------


def _explain(location: str | Path, failed: BaseException) -> ReportError:
    text, store = reason(failed), masked(location)
    if "locked" in text or "busy" in text:
        return ReportError(
            f"the audit store {store} is locked by another process ({text}); nothing was read, try again later"
        )
    if "not a database" in text or "malformed" in text:
        return ReportError(f"{store} is not a readable audit store: {text}")
    return ReportError(f"the audit store {store} cannot be read: {text}")


def read_period(
    location: str | Path, since: dt.date, until: dt.date, timeout: float = LOCK_TIMEOUT_SECONDS
) -> pd.DataFrame:
    """The latest decision of every declaration dated in the period, with its outcome (if any)."""
    if until < since:
        raise ReportError(f"--until {until} is before --since {since}")
    try:
        with reading(location, timeout=timeout) as db:
            return _period(db, masked(location), since, until)
    except FileNotFoundError:
        raise ReportError(f"no audit store at {location}: set RISK_AUDIT_DB or pass --db") from None
    except AuditStoreUnavailable as failed:
        raise _explain(location, failed.__cause__ or failed) from None


def _period(db: sa.Connection, store: str, since: dt.date, until: dt.date) -> pd.DataFrame:
    for table, needed in REQUIRED_COLUMNS.items():
        columns = table_columns(db, table)
        missing = [column for column in needed if column not in columns]
        if missing:
            what = f"has no {table} table" if not columns else f"its {table} lack {', '.join(missing)}"
            raise ReportError(
                f"the audit store {store} is from an older or another version: {what}. Open it once with "
                "the current service to bring it up to date (the report only reads it)"
            )
    # a store of the layout before version 2, not opened for writing since: no duty was reported
    duty = "o.additional_duty" if "additional_duty" in table_columns(db, "outcomes") else "NULL"
    # and before version 3: no decision recorded how its lane thresholds were set
    mode = "d.lane_thresholds" if "lane_thresholds" in table_columns(db, "decisions") else "NULL"
    declared = record_field(db, "d.record", "declaration_date")
    query = sa.text(PERIOD_DECISIONS.format(duty=duty, mode=mode, declared=declared))
    rows = pd.read_sql_query(query, db, params={"since": since.isoformat(), "until": until.isoformat()})
    if rows.empty:
        first, last, count = db.execute(sa.text(DATE_RANGE.format(declared=declared))).one()
        held = f"its {count:,} decisions are dated {first} to {last}" if count else "it holds no decisions"
        raise ReportError(f"no decision in the audit store {store} is dated {since} to {until}; {held}")
    return rows


def period_features(rows: pd.DataFrame, state) -> tuple[pd.DataFrame, int]:
    """The period's declarations as the model read them (`serving_inputs` with the champion's
    state, so encoded as the validation matrix is); also how many records could not be typed."""
    from features.matrix import FEATURE_NAMES, serving_inputs
    from features.schema import RECORD, check_declarations

    records = pd.DataFrame([json.loads(record) for record in rows["record"]])
    typed = check_declarations(records, RECORD).valid.reset_index(drop=True)
    if typed.empty:
        return pd.DataFrame(columns=FEATURE_NAMES, dtype="float64"), len(records)
    matrix = serving_inputs(typed, state).matrix
    return pd.DataFrame(matrix, columns=FEATURE_NAMES), len(records) - len(typed)


# --- the report --------------------------------------------------------------------------------


def make_report(
    store: str | Path,
    since: dt.date,
    until: dt.date,
    output: Path,
    reference: Reference,
    timeout: float | None = None,
) -> dict:
    """Write OUTPUT/kpis.json and OUTPUT/index.html; returns the KPIs. Raises ReportError when
    nothing could be reported (see `outcomes_reported` for a period without outcomes)."""
    rows = read_period(store, since, until, LOCK_TIMEOUT_SECONDS if timeout is None else timeout)
    notes = list(reference.notes)
    features = None
    if reference.state is not None and reference.features is not None:
        features, untyped = period_features(rows, reference.state)
        if untyped:
            notes.append(
                f"{untyped:,} stored declaration(s) could not be read back as records: left out of feature drift"
            )
    drifted = drift(reference.scores, rows["risk_score"].to_numpy(dtype="float64"), reference.features, features)
    figures = kpis(rows, since, until, reference, drifted)
    output.mkdir(parents=True, exist_ok=True)
    (output / "kpis.json").write_text(json.dumps(figures, indent=1) + "\n")
    (output / "index.html").write_text(render_html(figures, rows, notes))
    return figures


def outcomes_reported(figures: dict) -> int:
    """How many of the period's decisions have an outcome (0: every hit rate is null)."""
    return sum(lane["outcomes"] for lane in figures["lanes"].values())


def load_reference(settings) -> Reference:
    """The packaged champion (as `customs-risk score` finds it) and the checkout's validation
    window: its risk scores (`validation_scores`) and its rows of the feature matrix."""
    import yaml

    from features.matrix import FEATURE_NAMES
    from serving.loading import ChampionUnavailable, load_packaged, model_tag, packaged_champion

    try:
        bento_model = packaged_champion(model_tag(settings))
        model = load_packaged(bento_model)
    except ChampionUnavailable as problem:
        raise ReportError(str(problem)) from None
    metadata = dict(bento_model.info.metadata)
    reference = Reference(
        name=getattr(getattr(bento_model, "tag", None), "name", MODEL_NAME),
        version=str(metadata["version"]) if metadata.get("version") is not None else None,
        lanes=model.lanes,
        state=model.state,
        approval=metadata.get("approval") or {},
    )
    root = settings.checkout
    if root is None:
        reference.notes.append("not run in a checkout: no validation window to compare with, drift not computed")
        return reference
    reference.scores, missing = validation_scores(root)
    if missing:
        reference.notes.append(missing)
    matrix = root / CHECKOUT_MATRIX
    if matrix.exists():
        windows = yaml.safe_load((root / CHECKOUT_PARAMS).read_text())["windows"]
        window = [
            ("declaration_date", ">=", pd.Timestamp(windows["valid_start"])),
            ("declaration_date", "<=", pd.Timestamp(windows["valid_end"])),
        ]
        reference.features = pd.read_parquet(matrix, columns=FEATURE_NAMES, filters=window).astype("float64")
    else:
        reference.notes.append(f"{matrix} is missing (run `make run`): feature drift not computed")
    return reference
