"""Stage validate (docs/design.md invariant 6, nothing is lost): valid rows go on, exact repeats are
dropped and counted, every other rejected row is kept unchanged in quarantine with its reasons.
The stage streams the history: how many rows it checks at a time changes nothing, and a part it
cannot read stops it before any output is touched."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from features.adapters import with_source
from features.record import INSPECTED_ON, LABEL_FIELDS, LABELLED_FIELDS
from features.schema import LABELLED, check_declarations
from pipelines import validate as stage
from pipelines.common import part_path
from pipelines.ingest import write_part
from pipelines.paths import INTERIM, QUARANTINE, VALIDATED, VALIDATION_REPORT
from pipelines.validate import validate
from tests.conftest import HISTORY_RULES

COLUMNS = LABELLED_FIELDS
MISSING = "<null>"


def _rows(frame: pd.DataFrame) -> list[tuple]:
    """Rows as comparable tuples of their values as read (nulls made comparable)."""
    return [tuple(row) for row in frame[COLUMNS].astype(object).where(frame[COLUMNS].notna(), MISSING).to_numpy()]


def _assert_accounting(records: pd.DataFrame, valid, rejected, report) -> None:
    assert report["rows_in"] == len(records)
    assert report["rows_valid"] == len(valid)
    assert report["rows_rejected"] == len(rejected)
    assert report["rows_valid"] + report["rows_rejected"] + report["duplicates_dropped"] == report["rows_in"]
    assert report["reject_share"] == pytest.approx(len(rejected) / max(len(records), 1))
    assert list(rejected.columns) == list(records.columns) + ["rejection_reasons"]
    assert list(valid.columns) == COLUMNS


def _assert_quarantine_is_unchanged_input(records: pd.DataFrame, rejected: pd.DataFrame) -> None:
    inputs = set(_rows(records))
    for row in _rows(rejected.drop(columns=["rejection_reasons"])):
        assert row in inputs, row
    assert rejected["rejection_reasons"].map(lambda r: isinstance(r, str) and len(r) > 0).all()


@pytest.fixture(scope="module")
def sample(kcs_records) -> pd.DataFrame:
    """200 good KCS rows as read, plus 4 real rows with the unknown country ZZ (valid) and those
    4 rows again with their ZZ made the non-ISO "XX" under other IDs (invalid) among them."""
    unknown = kcs_records["origin_country"].eq("ZZ") | kcs_records["departure_country"].eq("ZZ")
    good = kcs_records[~unknown].sample(200, random_state=11)
    zz = kcs_records[unknown].head(4)
    broken = zz.replace({"origin_country": {"ZZ": "XX"}, "departure_country": {"ZZ": "XX"}})
    broken = broken.assign(declaration_id=broken["declaration_id"] + "-XX")
    records = pd.concat([good, zz, broken]).sample(frac=1, random_state=3).reset_index(drop=True)
    assert records["declaration_id"].is_unique
    return records


@pytest.fixture(scope="module")
def good_pool(kcs_records) -> pd.DataFrame:
    """Valid rows with unique IDs to build mixes from."""
    unknown = kcs_records["origin_country"].eq("ZZ") | kcs_records["departure_country"].eq("ZZ")
    pool = (
        kcs_records[~unknown].sample(60, random_state=5).reset_index(drop=True)
    )  # the same rows as before ZZ was valid
    assert check_declarations(pool, LABELLED).failures.empty
    return pool


def test_real_sample(sample):
    valid, rejected, report = validate(sample)
    _assert_accounting(sample, valid, rejected, report)
    _assert_quarantine_is_unchanged_input(sample, rejected)
    bad_country = sample["origin_country"].eq("XX") | sample["departure_country"].eq("XX")
    assert report["duplicates_dropped"] == 0
    assert sample["origin_country"].eq("ZZ").sum() + sample["departure_country"].eq("ZZ").sum() > 0
    assert (
        not valid["origin_country"].eq("XX").any()
        and valid["origin_country"].eq("ZZ").any() | valid["departure_country"].eq("ZZ").any()
    )
    assert sorted(rejected["declaration_id"]) == sorted(sample.loc[bad_country, "declaration_id"])
    assert rejected["rejection_reasons"].str.contains("iso_country").all()
    assert rejected["rejection_reasons"].str.contains("_country: ").all()
    assert set(report["rejected_by_check"]) == {"iso_country"}
    assert sum(report["rejected_by_check"].values()) == bad_country.sum()
    # valid rows are the others, typed
    assert sorted(valid["declaration_id"]) == sorted(sample.loc[~bad_country, "declaration_id"])
    expected = check_declarations(sample[~bad_country], LABELLED).valid
    pd.testing.assert_frame_equal(
        valid.sort_values("declaration_id").reset_index(drop=True),
        expected.sort_values("declaration_id").reset_index(drop=True),
    )


def test_whole_embedded_history(kcs_records):
    valid, rejected, report = validate(kcs_records)
    _assert_accounting(kcs_records, valid, rejected, report)
    assert valid["declaration_id"].is_unique
    # the 39 rows with the unknown country ZZ were its only rejections (issue 15): now none
    assert rejected.empty and report["rows_rejected"] == 0 and report["rejected_by_check"] == {}
    unknown = kcs_records["origin_country"].eq("ZZ") | kcs_records["departure_country"].eq("ZZ")
    assert unknown.sum() == 39 and valid["declaration_id"].isin(kcs_records.loc[unknown, "declaration_id"]).sum() == 39


def test_clean_input_has_an_empty_quarantine_with_its_column(sample):
    clean = sample[sample["origin_country"].ne("XX") & sample["departure_country"].ne("XX")]
    valid, rejected, report = validate(clean)
    _assert_accounting(clean, valid, rejected, report)
    assert rejected.empty and "rejection_reasons" in rejected.columns
    assert report["rejected_by_check"] == {} and report["reject_share"] == 0


def test_exact_duplicates_are_dropped_and_counted(sample):
    repeats = sample.iloc[[0, 0, 5, 9]]
    records = pd.concat([sample, repeats], ignore_index=True)
    valid, rejected, report = validate(records)
    _assert_accounting(records, valid, rejected, report)
    assert report["duplicates_dropped"] == 4
    assert valid["declaration_id"].is_unique
    for row in (0, 5, 9):
        declaration = sample.loc[row, "declaration_id"]
        assert (valid["declaration_id"] == declaration).sum() == 1
        assert declaration not in set(rejected["declaration_id"])
    assert "conflicting_duplicate" not in " ".join(rejected["rejection_reasons"])


def test_conflicting_duplicates_are_all_quarantined(sample):
    first = sample.iloc[[1]].copy()
    first["item_price"] = "1.5"  # same declaration ID, different content
    second = sample.iloc[[2, 2]].copy()
    second["fraud"] = ["1", "0"]  # original + exact copy + another version: three rows
    second["critical_fraud"] = ["0", "0"]
    records = pd.concat([sample, first, sample.iloc[[2]], second], ignore_index=True)
    valid, rejected, report = validate(records)
    _assert_accounting(records, valid, rejected, report)
    _assert_quarantine_is_unchanged_input(records, rejected)

    for row in (1, 2):
        declaration = sample.loc[row, "declaration_id"]
        assert declaration not in set(valid["declaration_id"])
        versions = rejected[rejected["declaration_id"] == declaration]
        distinct = records[records["declaration_id"] == declaration].drop_duplicates()
        assert len(versions) == len(distinct)
        assert versions["rejection_reasons"].str.contains("conflicting_duplicate").all()
        assert versions["rejection_reasons"].str.contains("declaration_id: ").all()
    # the exact copy of row 2 is dropped once; whether it was "fraud" 0 or 1 decides conflicts
    expected_dropped = len(records) - len(records.drop_duplicates())
    assert report["duplicates_dropped"] == expected_dropped
    conflicting = rejected["rejection_reasons"].str.contains("conflicting_duplicate").sum()
    assert report["rejected_by_check"]["conflicting_duplicate"] == conflicting


BREAKERS = [
    ("hs6_code", "12A456", "hs6_six_digits"),
    ("hs6_code", "1234", "hs6_six_digits"),
    ("origin_country", "XX", "iso_country"),
    ("tax_rate", "-1", "not_negative"),
    ("tax_rate", "1500", "tax_rate_at_most_1000"),
    ("net_mass_kg", "heavy", "is_a_number"),
    ("item_price", "-5", "not_negative"),
    ("item_price", "inf", "finite"),
    ("declaration_date", "2021/01/01", "iso_date"),
    ("fraud", "2", "label_0_or_1"),
    ("critical_fraud", "x", "is_a_number"),
    ("importer_id", None, "required"),
    ("declaration_id", None, "required"),
]


@pytest.mark.parametrize(("field", "value", "check"), BREAKERS)
def test_broken_rows_are_quarantined_with_the_check_named(sample, field, value, check):
    broken = sample.iloc[[7]].copy().astype(object)
    broken[field] = value
    if field != "declaration_id":
        broken["declaration_id"] = "BROKEN-1"
    records = pd.concat([sample.iloc[:20], broken], ignore_index=True)
    valid, rejected, report = validate(records)
    _assert_accounting(records, valid, rejected, report)
    _assert_quarantine_is_unchanged_input(records, rejected)
    quarantined = rejected[rejected["rejection_reasons"].str.contains(f"{field}: ")]
    assert len(quarantined) == 1
    assert check in quarantined["rejection_reasons"].iloc[0]
    assert _rows(quarantined.drop(columns=["rejection_reasons"])) == _rows(broken)
    if field != "declaration_id":
        assert "BROKEN-1" not in set(valid["declaration_id"])
    assert any(check in name for name in report["rejected_by_check"])


def test_critical_without_fraud_is_quarantined(sample):
    broken = sample.iloc[[3]].copy()
    broken[["declaration_id", "fraud", "critical_fraud"]] = ["CRIT-1", "0", "1"]
    records = pd.concat([sample.iloc[:10], broken], ignore_index=True)
    valid, rejected, report = validate(records)
    _assert_accounting(records, valid, rejected, report)
    assert rejected["declaration_id"].tolist() == ["CRIT-1"]
    assert "critical_implies_fraud" in rejected["rejection_reasons"].iloc[0]


def test_a_row_with_several_problems_lists_them_all(sample):
    broken = sample.iloc[[4]].copy()
    broken[["declaration_id", "hs6_code", "tax_rate"]] = ["MULTI-1", "12", "-3"]
    records = pd.concat([sample.iloc[:10], broken], ignore_index=True)
    _, rejected, report = validate(records)
    (reasons,) = rejected["rejection_reasons"]
    assert "hs6_code: " in reasons and "tax_rate: " in reasons and "; " in reasons
    assert report["rows_rejected"] == 1


def test_input_index_does_not_matter(sample):
    clean = sample[sample["origin_country"].ne("XX") & sample["departure_country"].ne("XX")]
    records = clean.iloc[:30].copy()
    records.index = np.arange(1000, 1030)[::-1]
    records.iloc[4, records.columns.get_loc("hs6_code")] = "1"
    valid, rejected, report = validate(records)
    _assert_accounting(records, valid, rejected, report)
    assert rejected["declaration_id"].tolist() == [records["declaration_id"].iloc[4]]


@pytest.mark.parametrize("change", ["extra", "missing"])
def test_column_level_failures_quarantine_every_row(sample, change):
    records = sample.iloc[:10].copy()
    if change == "extra":
        records["discount"] = "5%"
    else:
        records = records.drop(columns=["importer_id"])
    try:
        valid, rejected, report = validate(records)
    except Exception as error:  # the bug
        raise AssertionError(f"validate crashed: {type(error).__name__}") from error
    assert valid.empty and len(rejected) == len(records)
    assert report["rows_rejected"] == len(records)


# ---------------------------------------------------------------------------------------------
# accounting as a property over random mixes of good, broken and duplicated rows


KINDS = ["good", "broken", "exact", "conflict"]


@st.composite
def mixes(draw, pool_size: int):
    """A plan: each step emits a fresh good row, a fresh broken row, an exact copy of an earlier
    row or another version of an earlier row's declaration."""
    steps = draw(st.lists(st.sampled_from(KINDS), min_size=1, max_size=20))
    plan = []
    fresh = 0
    for kind in steps:
        if kind in ("exact", "conflict") and plan:
            plan.append((kind, draw(st.integers(0, len(plan) - 1))))
        elif fresh < pool_size:
            breaker = draw(st.integers(0, len(BREAKERS) - 1)) if kind == "broken" else None
            plan.append(("broken" if kind == "broken" else "good", (fresh, breaker)))
            fresh += 1
    shuffle = draw(st.randoms(use_true_random=False))
    return plan, shuffle


def _build(plan, pool: pd.DataFrame) -> list[pd.Series]:
    rows = []
    for step, (kind, arg) in enumerate(plan):
        if kind in ("good", "broken"):
            base, breaker = arg
            row = pool.iloc[base].astype(object).copy()
            if kind == "broken":
                field, value, _ = BREAKERS[breaker]
                row[field] = value
        elif kind == "exact":
            row = rows[arg].copy()
        else:  # another version of an earlier declaration: a new, valid item price
            row = rows[arg].copy()
            row["item_price"] = f"{700000 + step}.25"
        rows.append(row)
    return rows


def _is_broken(content: tuple) -> bool:
    """Independent of the code under test: the pool rows are valid, and every breaker value is
    invalid, so a row is broken exactly when it carries a breaker value."""
    row = dict(zip(COLUMNS, content))
    return any(row[field] == (MISSING if value is None else value) for field, value, _ in BREAKERS)


@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_accounting_holds_for_any_mix(good_pool, data):
    plan, shuffle = data.draw(mixes(len(good_pool)))
    rows = _build(plan, good_pool)
    shuffle.shuffle(rows)
    records = pd.DataFrame(rows, columns=COLUMNS).reset_index(drop=True)

    valid, rejected, report = validate(records)
    _assert_accounting(records, valid, rejected, report)
    _assert_quarantine_is_unchanged_input(records, rejected)

    # an independent oracle on the contents
    contents = _rows(records)
    distinct = list(dict.fromkeys(contents))
    ids = pd.Series([c[0] for c in distinct], dtype=object)
    conflicting = set(ids[ids.duplicated(keep=False) & ids.ne(MISSING)])
    expected_rejected = [c for c in distinct if c[0] in conflicting or _is_broken(c)]
    assert report["duplicates_dropped"] == len(contents) - len(distinct)
    assert sorted(_rows(rejected), key=str) == sorted(expected_rejected, key=str)
    expected_valid = [c[0] for c in distinct if c not in expected_rejected]
    assert sorted(valid["declaration_id"]) == sorted(expected_valid)
    assert valid["declaration_id"].is_unique
    conflict_rows = rejected[rejected["declaration_id"].isin(conflicting)]
    assert conflict_rows["rejection_reasons"].str.contains("conflicting_duplicate").all()
    assert len(conflict_rows) == sum(c[0] in conflicting for c in distinct)


# ---------------------------------------------------------------------------------------------
# the stage: a history in parts, checked a chunk at a time


@pytest.fixture
def interim(sample) -> pd.DataFrame:
    """40 rows from one file (some with "XX" countries), then from another file: an exact repeat
    of row 2 and another version of row 5's declaration, chunks away from their first rows."""
    first = with_source(sample.iloc[:40], "data/raw/a.csv")
    repeat = sample.iloc[[2]]
    altered = sample.iloc[[5]].assign(item_price="4321.5")
    later = with_source(pd.concat([sample.iloc[40:50], repeat, sample.iloc[50:55], altered]), "data/raw/b.csv")
    return pd.concat([first, later], ignore_index=True)


def _run_stage(tmp_path, monkeypatch, records: pd.DataFrame, chunk_rows: int | None = None):
    """The stage in a workspace of its own, its input as two parts; its outputs as read."""
    tmp_path.mkdir(exist_ok=True)
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text(
        yaml.safe_dump(
            {
                "validate": {
                    "max_reject_share": 0.5,
                    "history_start": "2020-01-01",
                    "run_date": "2021-06-30",
                    "max_net_mass_kg": 5e8,
                }
            }
        )
    )
    INTERIM.mkdir(parents=True, exist_ok=True)
    for index, part in enumerate((records.iloc[:25], records.iloc[25:])):
        write_part(part, part_path(INTERIM, index))
    if chunk_rows:
        monkeypatch.setattr(stage, "CHUNK_ROWS", chunk_rows)
    stage.main()
    return pd.read_parquet(VALIDATED), pd.read_parquet(QUARANTINE), json.loads(VALIDATION_REPORT.read_text())


def test_checking_a_few_rows_at_a_time_gives_the_one_chunk_result(interim, tmp_path, monkeypatch):
    valid, rejected, report = _run_stage(tmp_path / "whole", monkeypatch, interim)
    chunked = _run_stage(tmp_path / "chunked", monkeypatch, interim, chunk_rows=7)

    pd.testing.assert_frame_equal(chunked[0], valid)
    pd.testing.assert_frame_equal(chunked[1], rejected)
    assert chunked[2] == report
    assert len(list(VALIDATED.iterdir())) == 4 + 5  # parts of 25 and 32 rows, 7 at a time
    # and both are what validate gives for the history in memory
    # as ingest writes it: the administration's files do not say what selected a declaration
    write_part(interim, tmp_path / "interim.parquet")
    expected_valid, expected_rejected, expected_report = validate(
        pd.read_parquet(tmp_path / "interim.parquet"), HISTORY_RULES
    )
    pd.testing.assert_frame_equal(valid, expected_valid.reset_index(drop=True))
    pd.testing.assert_frame_equal(rejected, expected_rejected.reset_index(drop=True))
    assert report == json.loads(json.dumps(expected_report))
    assert report["duplicates_dropped"] == 1 and report["rejected_by_check"]["conflicting_duplicate"] == 2
    assert rejected.loc[rejected["rejection_reasons"].str.contains("conflicting"), "source_file"].tolist() == [
        "data/raw/a.csv",
        "data/raw/b.csv",
    ]
    assert report["rows_in_by_source"] == {"data/raw/a.csv": 40, "data/raw/b.csv": 17}


def _outputs() -> dict[Path, bytes]:
    roots = (VALIDATED.parent, QUARANTINE.parent, VALIDATION_REPORT.parent)
    return {path: path.read_bytes() for root in roots for path in sorted(root.rglob("*")) if path.is_file()}


@pytest.mark.parametrize(
    ("damage", "problem"),
    [("garbage", "not a readable Parquet file"), ("no importer_id", "missing column(s) ['importer_id']")],
)
def test_a_broken_part_stops_the_stage_naming_it_and_leaves_the_outputs(
    interim, tmp_path, monkeypatch, damage, problem
):
    _run_stage(tmp_path, monkeypatch, interim)  # the previous run's outputs
    before = _outputs()
    broken = part_path(INTERIM, 1)
    if damage == "garbage":
        broken.write_bytes(b"\x00garbage, not Parquet\xff" * 100)
    else:
        pd.read_parquet(broken).drop(columns=["importer_id"]).to_parquet(broken, index=False)

    with pytest.raises(SystemExit) as failed:
        stage.main()

    message = str(failed.value.code)
    assert str(broken) in message and problem in message, message
    assert _outputs() == before


# ---------------------------------------------------------------------------------------------
# history holds every declaration: the ones nobody inspected have null labels


def test_a_history_with_declarations_nobody_inspected_validates(interim, tmp_path, monkeypatch):
    """Uninspected rows are valid history (not rejects, so not counted against
    max_reject_share); an inspected one may say when; each contradiction is quarantined."""
    fully_labelled = _run_stage(tmp_path / "labelled", monkeypatch, interim)
    ids = interim["declaration_id"]
    plain = np.flatnonzero(~ids.duplicated(keep=False) & ids.isin(fully_labelled[0]["declaration_id"]))[:15]
    uninspected, inspected, contradicting = plain[:10], plain[10], plain[11:]
    records = interim.astype(object)
    records.loc[uninspected, LABEL_FIELDS] = None
    records.loc[inspected, INSPECTED_ON] = "2021-06-30"  # the outcome known on the run date
    contradictions = dict(
        zip(
            contradicting,
            [
                ({"fraud": None, "critical_fraud": "0"}, "fraud_empty_alone"),
                ({"fraud": "1", "critical_fraud": None}, "critical_fraud_empty_alone"),
                ({"fraud": "0", "critical_fraud": "1"}, "critical_implies_fraud"),
                ({"fraud": None, "critical_fraud": None, INSPECTED_ON: "2021-06-01"}, "inspected_on_without_labels"),
            ],
            strict=True,
        )
    )
    for row, (values, _) in contradictions.items():
        for name, value in values.items():
            records.loc[row, name] = value

    valid, rejected, report = _run_stage(tmp_path / "uninspected", monkeypatch, records)

    broken = {records.loc[row, "declaration_id"]: check for row, (_, check) in contradictions.items()}
    reasons = rejected.set_index("declaration_id")["rejection_reasons"]
    for declaration, check in broken.items():
        assert f"[{check}]" in reasons[declaration] and reasons[declaration].count("[") == 1, reasons[declaration]
    assert report["rows_rejected"] == fully_labelled[2]["rows_rejected"] + len(broken)
    assert report["rows_not_inspected"] == 10 and fully_labelled[2]["rows_not_inspected"] == 0
    not_inspected = valid["declaration_id"].isin(ids[uninspected])
    assert not_inspected.sum() == 10 and valid.loc[not_inspected, LABEL_FIELDS].isna().all().all()
    assert valid.loc[~not_inspected, LABEL_FIELDS].notna().all().all()
    assert valid.set_index("declaration_id").loc[ids[inspected], INSPECTED_ON] == pd.Timestamp("2021-06-30")
    assert valid[INSPECTED_ON].notna().sum() == 1
    # nullable int8 labels and a timestamp in the file; pandas reads the labels back as Int8
    schema = pq.read_schema(part_path(VALIDATED, 0))
    assert {name: str(schema.field(name).type) for name in [*LABEL_FIELDS, INSPECTED_ON]} == {
        "fraud": "int8",
        "critical_fraud": "int8",
        INSPECTED_ON: "timestamp[ns]",
    }
    assert all(valid[field].dtype == "Int8" for field in LABEL_FIELDS)
