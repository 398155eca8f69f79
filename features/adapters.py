"""Sources of history mapped onto the canonical record: administrations' exports and outcomes.

A customs administration's export is one `SourceLayout`: which column holds which canonical
field and how its labels read. Adding an administration is adding a layout, not changing a stage.

Outcomes exported from the scoring service (`customs-risk export-feedback`) are a source too:
canonical declarations as they were scored, labelled by what the inspection found, or with null
labels where nobody inspected them. The newest outcome for a declaration wins, over older
outcomes and over the administration's files; a declaration without one never replaces a row
that has one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from features.record import (
    DECLARATION,
    DECLARATION_FIELDS,
    INSPECTED_ON,
    LABEL_FIELDS,
    LABELLED_FIELDS,
    OPTIONAL_FIELDS,
    OUTCOME_DETAILS,
    SELECTED_BY,
)

# Where each ingested row came from, so a steward can find a quarantined row in its file.
SOURCE_FIELDS = ["source_file", "source_row"]  # source_row counts data rows from 1
# A feedback file: a row of history, what selected it (which only the service's decisions say)
# and when the service received its outcome.
OUTCOME_RECEIVED = "outcome_received_at"
OUTCOME_TIME_FIELDS = [INSPECTED_ON, OUTCOME_RECEIVED]  # the newest outcome is the last by these
FEEDBACK_FIELDS = LABELLED_FIELDS + [SELECTED_BY, OUTCOME_RECEIVED]


@dataclass(frozen=True)
class SourceLayout:
    name: str
    columns: dict[str, str]  # source column -> canonical field
    label_columns: tuple[str, ...]  # source columns the labels are read from
    labels: Callable[[pd.DataFrame], pd.DataFrame]  # source frame -> fraud, critical_fraud

    def to_canonical(self, source: pd.DataFrame) -> pd.DataFrame:
        """Rename and keep values as read (strings): typing them is validation's job, so a bad
        value is quarantined with its reason rather than lost in a parse error here."""
        needed = [*self.columns, *self.label_columns]
        missing = [column for column in needed if column not in source.columns]
        if missing:
            raise ValueError(f"{self.name} layout: missing columns {missing}")
        records = _with_optional_fields(source[list(self.columns)].rename(columns=self.columns))
        labels = self.labels(source)
        return pd.concat([records, labels], axis=1)[LABELLED_FIELDS]


def _with_optional_fields(records: pd.DataFrame) -> pd.DataFrame:
    """Optional fields a source does not have (KCS has no container number or bill of lading,
    no inspection date, no duty assessed and no selection; feedback exported before they existed)
    as null, so every source has the columns of a row of history."""
    optional = [field for field in DECLARATION_FIELDS if field in OPTIONAL_FIELDS] + OUTCOME_DETAILS + [SELECTED_BY]
    missing = [field for field in optional if field not in records.columns]
    return records.assign(**{field: pd.Series(None, index=records.index, dtype="str") for field in missing})


def labels_from_outcome(column: str, outcomes: dict[str, tuple[str, str]]) -> Callable:
    """Labels read from one outcome column: each value names (fraud, critical_fraud). A value
    not in `outcomes` is kept in both labels, so validation quarantines it, showing it."""

    def labels(source: pd.DataFrame) -> pd.DataFrame:
        found = source[column].str.strip()
        return pd.DataFrame(
            {
                "fraud": found.map({k: v[0] for k, v in outcomes.items()}).fillna(source[column]),
                "critical_fraud": found.map({k: v[1] for k, v in outcomes.items()}).fillna(source[column]),
            },
            index=source.index,
        )

    return labels


def _kcs_labels(source: pd.DataFrame) -> pd.DataFrame:
    # KCS "Critical Fraud" is 0 clean, 1 fraud, 2 critical fraud: only 2 is critical. "Fraud" is
    # read on its own, so a row that contradicts itself is caught by validation. Every KCS row was
    # inspected, on a day the export does not give: inspected_on stays null.
    critical = source["Critical Fraud"].str.strip()
    return pd.DataFrame(
        {
            "fraud": source["Fraud"],
            "critical_fraud": critical.where(critical.isna(), (critical == "2").map(int).astype(str)),
        },
        index=source.index,
    )


KCS = SourceLayout(
    name="kcs",
    # the columns the contract's table names; the export has no container number or bill of
    # lading: both null for its rows
    columns={field.kcs: field.name for field in DECLARATION if field.kcs},
    label_columns=("Fraud", "Critical Fraud"),
    labels=_kcs_labels,
)

LAYOUTS = {layout.name: layout for layout in [KCS]}


def read_source_chunks(path: str | Path, layout: SourceLayout, rows: int | None) -> Iterator[pd.DataFrame]:
    """A source CSV `rows` rows at a time (None: in one piece), so a national export never has
    to fit in memory; every value is read as a string, so leading zeros survive."""
    with pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], chunksize=rows, iterator=True) as reader:
        for chunk in reader:
            yield layout.to_canonical(chunk)


def read_source(path: str | Path, layout: SourceLayout) -> pd.DataFrame:
    """A whole source file, for samples and tests; the ingest stage streams it instead."""
    return pd.concat(read_source_chunks(path, layout, rows=None))


def with_source(records: pd.DataFrame, path: str | Path, first_row: int = 1) -> pd.DataFrame:
    """`first_row`: the file row of the first record, when `records` is a later chunk of it."""
    return records.assign(source_file=str(path), source_row=range(first_row, first_row + len(records)))


def has_outcome(rows: pd.DataFrame) -> pd.Series:
    """Rows that say anything an inspection found: the others were scored and never inspected."""
    return rows[[*LABEL_FIELDS, INSPECTED_ON]].notna().any(axis=1)


def newest_outcomes(feedback: pd.DataFrame) -> pd.DataFrame:
    """One row per declaration: its latest inspection, and of equal dates the latest received;
    without any, its last row (a scored declaration nobody inspected)."""
    ordered = feedback.sort_values(OUTCOME_TIME_FIELDS, kind="stable", na_position="first")
    return ordered.drop_duplicates("declaration_id", keep="last").sort_index()


def read_feedback(folder: str | Path) -> pd.DataFrame:
    """Every feedback file in `folder`, newest outcome per declaration, values as exported."""
    files = sorted(Path(folder).glob("*.parquet"))
    frames = [with_source(_with_optional_fields(pd.read_parquet(path))[FEEDBACK_FIELDS], path) for path in files]
    if not frames:
        return pd.DataFrame(columns=FEEDBACK_FIELDS + SOURCE_FIELDS, dtype="str")
    return newest_outcomes(pd.concat(frames, ignore_index=True)).reset_index(drop=True)


def merge_feedback(
    history: Iterable[pd.DataFrame], feedback: pd.DataFrame, in_files: set[str]
) -> Iterator[pd.DataFrame]:
    """History chunk by chunk, then the feedback: an outcome is newer than any file, so it
    replaces every row of its declaration; a declaration the service scored and nobody
    inspected is added only where no file holds it, so a label the files know is never lost.
    `in_files` collects the fed-back declarations that the files hold too."""
    fed_back, outcome = feedback["declaration_id"], has_outcome(feedback)
    for chunk in history:
        ids = chunk["declaration_id"]
        in_files.update(ids[ids.isin(fed_back)])
        yield chunk[~ids.isin(fed_back[outcome])]
    yield feedback[outcome | ~fed_back.isin(in_files)].drop(columns=OUTCOME_RECEIVED)
