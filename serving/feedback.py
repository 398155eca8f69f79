"""`customs-risk export-feedback`: every declaration the service scored, as rows of history.

A center learns only from what it inspects, but its history must hold everything it received:
volume features count every declaration, and a model trained only on its own selections cannot
see its bias. So each declaration the service scored is exported as it was last scored (the audit
store keeps the record as received), with what that decision was (`lane`, `selected_by`,
`risk_score`), and labelled by its outcome where one was posted to /outcomes, null otherwise.
The file is a source like any administration's export: values as received, as text, typed and
checked by validate. Exporting again merges into the file, newest outcome first, and a row
without an outcome never replaces one with it, so a reset audit store loses nothing.

Besides the labels the file carries `inspected_on` (from when a label counts in features) and
`additional_duty`, the duty the inspection assessed (null when not reported): the duty model
learns from it what an inspection recovers.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pandas as pd
import sqlalchemy as sa
import typer

from features.adapters import FEEDBACK_FIELDS, labels_from_outcome, newest_outcomes
from features.schema import DECLARATION_FIELDS, RECOVERED_DUTY
from serving.audit import AuditStoreUnavailable, reading, table_columns
from serving.settings import Settings, SettingsError

DEFAULT_OUTPUT = Path("data/feedback/outcomes.parquet")
# What the service decided, beside the record; `selected_by` is a feedback field, which history keeps.
EXPORT_FIELDS = FEEDBACK_FIELDS + ["lane", "risk_score"]
# /outcomes result -> (fraud, critical_fraud)
OUTCOME_LABELS = {"clean": ("0", "0"), "fraud": ("1", "0"), "critical": ("1", "1")}
_DECISIONS_WITH_OUTCOMES = """
SELECT d.declaration_id, d.record, d.lane, d.selected_by, d.risk_score,
       o.inspected_on, o.result, o.received_at AS outcome_received_at, {duty} AS additional_duty
FROM decisions AS d
LEFT JOIN outcomes AS o ON o.declaration_id = d.declaration_id
WHERE d.id IN (SELECT MAX(id) FROM decisions GROUP BY declaration_id)
ORDER BY d.declaration_id
"""
_UNSCORED_OUTCOMES = "SELECT count(*) FROM outcomes WHERE declaration_id NOT IN (SELECT declaration_id FROM decisions)"


def _as_text(value) -> str | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def history_rows(scored: pd.DataFrame) -> pd.DataFrame:
    """Latest decisions (`record` JSON) with their outcome, if any -> feedback rows."""
    scored = scored.reset_index(drop=True)
    records = [json.loads(record) for record in scored["record"]]
    declarations = pd.DataFrame(
        {field: [_as_text(record.get(field)) for record in records] for field in DECLARATION_FIELDS},
        dtype="str",
    )
    labels = labels_from_outcome("result", OUTCOME_LABELS)(scored)
    text = {
        column: pd.Series([_as_text(value) for value in scored[column].astype(object)], name=column, dtype="str")
        for column in [RECOVERED_DUTY, "risk_score"]
    }
    feedback = pd.concat(
        [
            declarations,
            labels,
            scored[["inspected_on", "outcome_received_at", "lane", "selected_by"]],
            *text.values(),
        ],
        axis=1,
    )
    return feedback[EXPORT_FIELDS]


def _earlier_export(output: Path) -> pd.DataFrame:
    """The file as an earlier export left it; columns an older export did not have are null."""
    earlier = pd.read_parquet(output)
    for column in EXPORT_FIELDS:
        if column not in earlier.columns:
            earlier[column] = pd.Series([None] * len(earlier), dtype="str")
    return earlier[EXPORT_FIELDS]


def export_feedback(audit_db: str | Path, output: Path) -> dict:
    try:
        with reading(audit_db) as db:  # the export never writes to the store
            # a store of an earlier layout, not opened for writing since: no outcome reported a duty
            duty = f"o.{RECOVERED_DUTY}" if RECOVERED_DUTY in table_columns(db, "outcomes") else "NULL"
            scored = pd.read_sql_query(sa.text(_DECISIONS_WITH_OUTCOMES.format(duty=duty)), db)
            unscored = db.execute(sa.text(_UNSCORED_OUTCOMES)).scalar() or 0
    except FileNotFoundError:
        raise FileNotFoundError(f"no audit store at {audit_db} (set --audit-db or RISK_AUDIT_DB)") from None
    exported = history_rows(scored)
    merged = exported
    if output.exists():
        merged = newest_outcomes(pd.concat([_earlier_export(output), exported], ignore_index=True))
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    merged.to_parquet(partial, index=False)
    os.replace(partial, output)  # ingest never reads a half-written file
    return {
        "scored": len(exported),
        "inspected": int(scored["result"].notna().sum()),
        "unscored": int(unscored),
        "in_file": len(merged),
        "by_result": scored["result"].dropna().value_counts().to_dict(),
    }


def export_feedback_command(
    audit_db: str | None = typer.Option(
        None,
        help="the service's audit store, a SQLite path or postgresql:// URL (default: RISK_AUDIT_DB, else data/serving/audit.db in this checkout)",
    ),
    output: Path = typer.Option(DEFAULT_OUTPUT, help="feedback file; ingest reads every *.parquet in its folder"),
) -> None:
    """Write every declaration the service scored, labelled where an outcome was posted, for the next `dvc repro`."""
    try:
        summary = export_feedback(audit_db or Settings.from_environment().audit_store(), output)
    except (FileNotFoundError, SettingsError, AuditStoreUnavailable) as missing:
        typer.echo(f"export-feedback: {missing}", err=True)
        raise typer.Exit(2) from None
    results = ", ".join(f"{result} {n:,}" for result, n in sorted(summary["by_result"].items())) or "none"
    typer.echo(
        f"export-feedback: {summary['scored']:,} scored declarations, {summary['inspected']:,} with an outcome "
        f"({results}), the rest with null labels -> {output} ({summary['in_file']:,} in the file)"
    )
    if summary["unscored"]:
        typer.echo(
            f"export-feedback: {summary['unscored']:,} outcomes left out: their declarations were "
            "never scored by this service, so there is no record to label",
            err=True,
        )
