"""Stage ingest: another administration's export is one new layout, not a pipeline change; fed
back outcomes replace the files' rows for their declarations, the newest outcome winning; how
many rows are read at a time changes nothing but the parts."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from features.adapters import FEEDBACK_FIELDS, KCS, LAYOUTS, SourceLayout, labels_from_outcome
from features.record import DECLARATION_FIELDS, LABEL_FIELDS, SELECTED_BY
from features.schema import LABELLED, check_declarations
from pipelines import ingest as stage
from pipelines.paths import INTERIM
from pipelines.validate import validate
from tests.conftest import RAW

# An administration that names its columns its own way and reports one finding per declaration.
EXAMPLE = SourceLayout(
    name="example",
    columns={
        "DeclNo": "declaration_id",
        "AcceptedOn": "declaration_date",
        "Office": "office_id",
        "Procedure": "process_type",
        "ImportKind": "import_type",
        "Use": "import_use",
        "Payment": "payment_type",
        "Transport": "transport_mode",
        "Declarant": "declarant_id",
        "Importer": "importer_id",
        "Seller": "seller_id",
        "Courier": "courier_id",
        "Commodity": "hs6_code",
        "DispatchCountry": "departure_country",
        "OriginCountry": "origin_country",
        "DutyRate": "tax_rate",
        "DutyType": "tax_type",
        "OriginProof": "origin_indicator",
        "NetKg": "net_mass_kg",
        "Value": "item_price",
    },
    label_columns=("Finding",),
    labels=labels_from_outcome(
        "Finding", {"none": ("0", "0"), "irregularity": ("1", "0"), "serious irregularity": ("1", "1")}
    ),
)
KCS_FIELDS = {field: column for column, field in KCS.columns.items()}
FINDINGS = {("0", "0"): "none", ("1", "0"): "irregularity", ("1", "1"): "serious irregularity"}


@pytest.fixture(scope="module")
def kcs_rows(kcs_records) -> pd.DataFrame:
    valid = kcs_records[kcs_records["origin_country"].ne("ZZ") & kcs_records["departure_country"].ne("ZZ")]
    frauds = valid[valid["critical_fraud"].eq("1")].head(3)
    return pd.concat([frauds, valid.sample(17, random_state=2)]).reset_index(drop=True)


def _params(sources, feedback) -> dict:
    return {"layout": "kcs", "sources": [str(s) for s in sources], "feedback": str(feedback)}


def ingest(params: dict, output) -> pd.DataFrame:
    """The records the stage writes to `output`, its parts read as one frame."""
    written = stage.ingest(params, output)
    records = pd.read_parquet(output)
    assert written == len(records)
    return records


def test_another_administration_is_one_new_layout(kcs_rows, tmp_path, monkeypatch):
    export = kcs_rows[DECLARATION_FIELDS].rename(columns={v: k for k, v in EXAMPLE.columns.items()})
    export["Finding"] = [FINDINGS[labels] for labels in zip(kcs_rows["fraud"], kcs_rows["critical_fraud"])]
    pending = export.iloc[[0]].assign(DeclNo="PENDING-1", Finding="pending")
    uninspected = export.iloc[[1]].assign(DeclNo="UNINSPECTED-1", Finding="")  # no finding
    export = pd.concat([export, pending, uninspected], ignore_index=True)
    export.to_csv(tmp_path / "example.csv", index=False)
    (tmp_path / "feedback").mkdir()
    monkeypatch.setitem(LAYOUTS, "example", EXAMPLE)

    records = ingest(
        _params([tmp_path / "example.csv"], tmp_path / "feedback") | {"layout": "example"}, tmp_path / "out"
    )
    valid, rejected, _ = validate(records)

    expected = check_declarations(kcs_rows, LABELLED).valid
    pd.testing.assert_frame_equal(valid.iloc[:-1].drop(columns=SELECTED_BY).reset_index(drop=True), expected)
    assert expected["critical_fraud"].sum() == 3
    assert valid["declaration_id"].iloc[-1] == "UNINSPECTED-1"  # nobody inspected it
    assert valid[LABEL_FIELDS].iloc[-1].isna().all()
    assert rejected["declaration_id"].tolist() == ["PENDING-1"]
    assert "fraud: must be a number [is_a_number]" in rejected["rejection_reasons"].iloc[0]
    assert rejected[["fraud", "critical_fraud"]].values.tolist() == [["pending", "pending"]]  # shown


@pytest.fixture
def kcs_file(tmp_path) -> tuple:
    source = pd.read_csv(RAW / "df_syn_valid_eng.csv", dtype=str, keep_default_na=False, na_values=[""]).head(40)
    path = tmp_path / "kcs.csv"
    source.to_csv(path, index=False)
    (tmp_path / "feedback").mkdir()
    return path, tmp_path / "feedback", source


def _outcome(row: pd.Series, inspected_on: str, received_at: str, fraud: str, critical: str, **changes) -> dict:
    record = {field: row[column] for field, column in KCS_FIELDS.items()} | changes
    return record | {
        "fraud": fraud,
        "critical_fraud": critical,
        "inspected_on": inspected_on,
        "outcome_received_at": received_at,
    }


def test_without_feedback_the_files_are_the_history(kcs_file):
    path, feedback, source = kcs_file
    records = ingest(_params([path], feedback), path.parent / "out")
    assert records["declaration_id"].tolist() == source["Declaration ID"].tolist()
    assert records["source_file"].eq(str(path)).all()
    assert records["source_row"].tolist() == list(range(1, 41))


def _outcomes(feedback, source: pd.DataFrame) -> None:
    """Two replicas' outcomes for the first two declarations of `source`, and one for a new one."""
    first, second = source.iloc[0], source.iloc[1]
    pd.DataFrame(
        [
            _outcome(first, "2021-04-01", "2021-04-01T10:00:00", "1", "0"),
            _outcome(second, "2021-04-03", "2021-04-09T10:00:00", "1", "1"),  # inspected later...
        ],
        columns=FEEDBACK_FIELDS,
    ).to_parquet(feedback / "replica-a.parquet")
    pd.DataFrame(
        [
            _outcome(first, "2021-04-05", "2021-04-05T10:00:00", "0", "0", item_price="999.0"),
            _outcome(second, "2021-04-02", "2021-04-10T10:00:00", "0", "0"),  # ...than received
            _outcome(first, "2021-04-05", "2021-04-06T08:00:00", "1", "0", item_price="998.0"),
            _outcome(first, "2021-04-06", "2021-04-06T09:00:00", "1", "0", declaration_id="NEW-1"),
        ],
        columns=FEEDBACK_FIELDS,
    ).to_parquet(feedback / "replica-b.parquet")


def test_the_newest_outcome_wins_over_older_ones_and_the_files(kcs_file):
    path, feedback, source = kcs_file
    first, second = source.iloc[0], source.iloc[1]
    _outcomes(feedback, source)

    records = ingest(_params([path], feedback), path.parent / "out")

    assert len(records) == 40 + 1  # two declarations relabelled, one new
    assert records["declaration_id"].is_unique
    by_id = records.set_index("declaration_id")
    assert by_id.loc[first["Declaration ID"], ["fraud", "item_price"]].tolist() == ["1", "998.0"]
    assert by_id.loc[first["Declaration ID"], "source_file"] == str(feedback / "replica-b.parquet")
    assert by_id.loc[second["Declaration ID"], ["fraud", "critical_fraud"]].tolist() == ["1", "1"]
    assert by_id.loc[second["Declaration ID"], "source_row"] == 2
    assert by_id.loc["NEW-1", "fraud"] == "1"
    assert list(records.columns) == stage.WITH_SELECTION.names
    _valid, rejected, report = validate(records)
    assert rejected.empty and report["rows_in_by_source"][str(feedback / "replica-b.parquet")] == 2


def test_reading_a_few_rows_at_a_time_gives_the_same_records(kcs_file, monkeypatch):
    path, feedback, source = kcs_file
    _outcomes(feedback, source)
    whole = ingest(_params([path, path], feedback), path.parent / "whole")

    monkeypatch.setattr(stage, "CHUNK_ROWS", 7)
    chunked = ingest(_params([path, path], feedback), path.parent / "chunked")

    pd.testing.assert_frame_equal(chunked, whole)
    assert whole["source_row"].tolist()[:-3] == [*range(3, 41), *range(3, 41)]  # rows 1-2 relabelled
    parts = sorted(p.name for p in (path.parent / "chunked").iterdir())
    assert parts == [f"part-{i:05d}.parquet" for i in range(2 * 6 + 1)]  # 40 rows: 6 chunks a file


def test_stage_writes_its_parts_in_place_when_complete(kcs_file, monkeypatch):
    path, feedback, source = kcs_file
    monkeypatch.chdir(path.parent)
    (path.parent / "params.yaml").write_text(yaml.safe_dump({"ingest": _params([path], feedback)}))
    monkeypatch.setattr(stage, "CHUNK_ROWS", 16)
    stage.main()
    assert sorted(p.name for p in INTERIM.iterdir()) == [f"part-{i:05d}.parquet" for i in range(3 + 1)]
    assert pd.read_parquet(INTERIM)["declaration_id"].tolist() == source["Declaration ID"].tolist()
    assert not list(INTERIM.parent.glob(".*"))  # no staging left behind


def test_declarations_scored_and_not_inspected_keep_the_files_labels_or_join_history_unlabelled(kcs_file):
    """export-feedback writes every scored declaration: one nobody inspected has null labels and
    no inspection date. It never replaces the files' row of its declaration (whose label is
    known), and joins history, unlabelled, where the files do not have it."""
    path, feedback, source = kcs_file
    first, second = source.iloc[0], source.iloc[1]
    pd.DataFrame(
        [
            _outcome(first, None, None, None, None),
            _outcome(second, "2021-04-03", "2021-04-09T10:00:00", "1", "1"),
            _outcome(first, None, None, None, None, declaration_id="SCORED-1"),
        ],
        columns=FEEDBACK_FIELDS,
    ).to_parquet(feedback / "outcomes.parquet")

    records = ingest(_params([path], feedback), path.parent / "out")

    assert len(records) == 40 + 1 and records["declaration_id"].is_unique
    by_id = records.set_index("declaration_id")
    assert by_id.loc[first["Declaration ID"], ["fraud", "source_file"]].tolist() == [first["Fraud"], str(path)]
    assert by_id.loc[second["Declaration ID"], ["fraud", "critical_fraud", "inspected_on"]].tolist() == [
        "1",
        "1",
        "2021-04-03",
    ]
    assert by_id.loc["SCORED-1", [*LABEL_FIELDS, "inspected_on"]].isna().all()
    valid, rejected, report = validate(records)
    assert rejected.empty and report["rows_not_inspected"] == 1
    assert valid.set_index("declaration_id").loc[second["Declaration ID"], "inspected_on"] == pd.Timestamp("2021-04-03")


def test_what_selected_a_fed_back_declaration_reaches_the_validated_history(kcs_file):
    """export-feedback's `selected_by` is kept as provenance for evaluate (the file's `lane` and
    `risk_score` are not); the administration's rows, which do not say, have none; a value no
    decision gives is quarantined with its reason."""
    path, feedback, source = kcs_file
    first, second, third = source.iloc[0], source.iloc[1], source.iloc[2]
    rows = [
        _outcome(first, "2021-04-03", "2021-04-09T10:00:00", "1", "0") | {SELECTED_BY: "random"},
        _outcome(second, None, None, None, None, declaration_id="SCORED-1") | {SELECTED_BY: "model"},
        _outcome(third, "2021-04-03", "2021-04-09T10:00:00", "0", "0") | {SELECTED_BY: "hunch"},
    ]
    exported = pd.DataFrame(rows, columns=FEEDBACK_FIELDS).assign(lane=["red", "green", "red"], risk_score="0.5")
    exported.to_parquet(feedback / "outcomes.parquet")

    valid, rejected, _report = validate(ingest(_params([path], feedback), path.parent / "out"))

    selected_by = valid.set_index("declaration_id")[SELECTED_BY]
    assert selected_by[first["Declaration ID"]] == "random" and selected_by["SCORED-1"] == "model"
    assert selected_by.drop([first["Declaration ID"], "SCORED-1"]).isna().all()  # the KCS rows
    assert "lane" not in valid.columns and "risk_score" not in valid.columns
    assert rejected["declaration_id"].tolist() == [third["Declaration ID"]]
    assert rejected["rejection_reasons"].item().startswith("selected_by: must be one of model, value, critical, rule,")
    assert "[selected_by_source]" in rejected["rejection_reasons"].item()


def test_a_history_that_never_says_what_selected_it_validates_as_before(kcs_file):
    path, feedback, _source = kcs_file
    records = ingest(_params([path], feedback), path.parent / "out")
    valid, rejected, report = validate(records)
    without = validate(records.drop(columns=SELECTED_BY))
    assert valid[SELECTED_BY].isna().all() and rejected.empty
    pd.testing.assert_frame_equal(valid.drop(columns=SELECTED_BY), without[0])
    assert report == without[2]
