"""`customs-risk export-feedback`: what inspections found, as labelled declarations for training.

Each outcome posted to /outcomes is joined to the declaration as the service last scored it
(the audit store keeps the record as received) and labelled by the result. The file is a source
like any administration's export: values as received, as text, typed and checked by validate.
Exporting again merges into the file, newest outcome first, so a reset audit store loses nothing.

Besides the labels the file carries `additional_duty`, the duty the inspection assessed as
posted to /outcomes (text, null when not reported): ingest takes it into history, where the duty
model learns what an inspection recovers.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pandas as pd
import typer

from features.adapters import FEEDBACK_FIELDS, labels_from_outcome, newest_outcomes
from features.schema import DECLARATION_FIELDS, RECOVERED_DUTY
from serving.audit import read_only, table_columns
from serving.settings import Settings, SettingsError

DEFAULT_OUTPUT = Path("data/feedback/outcomes.parquet")
# /outcomes result -> (fraud, critical_fraud)
OUTCOME_LABELS = {"clean": ("0", "0"), "fraud": ("1", "0"), "critical": ("1", "1")}
_OUTCOMES_WITH_RECORDS = """
SELECT o.declaration_id, o.inspected_on, o.result, o.received_at AS outcome_received_at, {duty} AS additional_duty,
       d.record
FROM outcomes AS o
LEFT JOIN decisions AS d
  ON d.id = (SELECT MAX(id) FROM decisions WHERE declaration_id = o.declaration_id)
ORDER BY o.declaration_id
"""


def _as_text(value) -> str | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def labelled_declarations(outcomes: pd.DataFrame) -> pd.DataFrame:
    """Outcomes joined to their scored record (`record` JSON) -> feedback rows; outcomes for
    declarations this service never scored have no record and are left out."""
    scored = outcomes[outcomes["record"].notna()].reset_index(drop=True)
    records = [json.loads(record) for record in scored["record"]]
    declarations = pd.DataFrame(
        {field: [_as_text(record.get(field)) for record in records] for field in DECLARATION_FIELDS},
        dtype="str",
    )
    labels = labels_from_outcome("result", OUTCOME_LABELS)(scored)
    duty = pd.Series(
        [_as_text(value) for value in scored[RECOVERED_DUTY].astype(object)], name=RECOVERED_DUTY, dtype="str"
    )
    feedback = pd.concat([declarations, labels, scored[["inspected_on", "outcome_received_at"]], duty], axis=1)
    return feedback[FEEDBACK_FIELDS]


def _earlier_export(output: Path) -> pd.DataFrame:
    """The file as an earlier export left it; one written before the duty was exported has it null."""
    earlier = pd.read_parquet(output)
    if RECOVERED_DUTY not in earlier.columns:
        earlier[RECOVERED_DUTY] = pd.Series([None] * len(earlier), dtype="str")
    return earlier[FEEDBACK_FIELDS]


def export_feedback(audit_db: Path, output: Path) -> dict:
    if not audit_db.exists():
        raise FileNotFoundError(f"no audit store at {audit_db} (set --audit-db or RISK_AUDIT_DB)")
    db = read_only(audit_db)  # the export never writes to the store
    try:
        # a store of an earlier layout, not opened for writing since: no outcome reported a duty
        duty = f"o.{RECOVERED_DUTY}" if RECOVERED_DUTY in table_columns(db, "outcomes") else "NULL"
        outcomes = pd.read_sql_query(_OUTCOMES_WITH_RECORDS.format(duty=duty), db)
    finally:
        db.close()
    exported = labelled_declarations(outcomes)
    merged = exported
    if output.exists():
        merged = newest_outcomes(pd.concat([_earlier_export(output), exported], ignore_index=True))
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    merged.to_parquet(partial, index=False)
    os.replace(partial, output)  # ingest never reads a half-written file
    return {
        "outcomes": len(outcomes),
        "exported": len(exported),
        "unscored": len(outcomes) - len(exported),
        "in_file": len(merged),
        "by_result": outcomes.loc[outcomes["record"].notna(), "result"].value_counts().to_dict(),
    }


def export_feedback_command(
    audit_db: Path | None = typer.Option(
        None, help="the service's audit store (default: RISK_AUDIT_DB, else data/serving/audit.db in this checkout)"
    ),
    output: Path = typer.Option(DEFAULT_OUTPUT, help="feedback file; ingest reads every *.parquet in its folder"),
) -> None:
    """Write the outcomes posted to /outcomes, with the declarations they judge, for the next `dvc repro`."""
    try:
        summary = export_feedback(audit_db or Settings.from_environment().audit_store(), output)
    except (FileNotFoundError, SettingsError) as missing:
        typer.echo(f"export-feedback: {missing}", err=True)
        raise typer.Exit(2) from None
    results = ", ".join(f"{result} {n:,}" for result, n in sorted(summary["by_result"].items())) or "none"
    typer.echo(
        f"export-feedback: {summary['exported']:,} labelled declarations ({results}) -> {output} "
        f"({summary['in_file']:,} in the file)"
    )
    if summary["unscored"]:
        typer.echo(
            f"export-feedback: {summary['unscored']:,} outcomes left out: their declarations were "
            "never scored by this service, so there is no record to label",
            err=True,
        )
