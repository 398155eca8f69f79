"""Quarantine (docs/design.md invariant 6): for every check, a row breaking it lands in quarantine,
unchanged, with that check and field named, while the good rows go on; every input row is
accounted for; a corrupted copy of the KCS history yields the report its manifest predicts."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pandas as pd
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from features.adapters import KCS, SOURCE_FIELDS, with_source
from features.record import BUILT_IN_CHECKS, DATE_IN_RANGE, IS_A_DATE, IS_A_NUMBER, LABELLED_FIELDS
from pipelines import validate as stage
from pipelines.common import part_path
from pipelines.ingest import write_part
from pipelines.paths import INTERIM, QUARANTINE, VALIDATED, VALIDATION_REPORT
from pipelines.validate import validate
from tests.conftest import HISTORY_RULES as RULES
from tests.conftest import RAW
from tests.corrupt_history import CONFLICTING_DUPLICATE, EXACT_DUPLICATE, corrupt_kcs

COLUMNS = LABELLED_FIELDS


@dataclass(frozen=True)
class Breaker:
    check: str
    field: str
    changes: dict = field(default_factory=dict)
    reuse_id: bool = False  # take the ID of a good row: a conflicting duplicate


BREAKERS = [
    Breaker("required", "importer_id", {"importer_id": None}),
    Breaker("is_a_number", "tax_rate", {"tax_rate": "8%"}),
    Breaker("iso_date", "declaration_date", {"declaration_date": "15/03/2020"}),
    Breaker("not_blank", "office_id", {"office_id": "  "}),
    Breaker("at_most_64_characters", "declaration_id", {"declaration_id": "D" * 65}),
    Breaker("iso6346_format", "container_number", {"container_number": "CSQU305438"}),
    Breaker("iso6346_check_digit", "container_number", {"container_number": "CSQU3054384"}),
    Breaker("hs6_six_digits", "hs6_code", {"hs6_code": "10121"}),
    Breaker("hs_chapter_exists", "hs6_code", {"hs6_code": "770100"}),
    Breaker("iso_country", "origin_country", {"origin_country": "UK"}),
    Breaker("not_negative", "net_mass_kg", {"net_mass_kg": "-1"}),
    Breaker("tax_rate_at_most_1000", "tax_rate", {"tax_rate": "1000.5"}),
    Breaker("finite", "item_price", {"item_price": "inf"}),
    Breaker("label_0_or_1", "fraud", {"fraud": "2"}),
    Breaker("critical_implies_fraud", "critical_fraud", {"fraud": "0", "critical_fraud": "1"}),
    Breaker("fraud_empty_alone", "fraud", {"fraud": None, "critical_fraud": "0"}),
    Breaker("critical_fraud_empty_alone", "critical_fraud", {"fraud": "1", "critical_fraud": None}),
    Breaker(
        "inspected_on_without_labels",
        "inspected_on",
        {"fraud": None, "critical_fraud": None, "inspected_on": "2021-06-01"},
    ),
    Breaker(
        "additional_duty_without_labels",
        "additional_duty",
        {"fraud": None, "critical_fraud": None, "additional_duty": "10"},
    ),
    Breaker("inspected_on_not_before_declaration", "inspected_on", {"inspected_on": "2019-12-31"}),
    Breaker("duty_not_negative", "additional_duty", {"additional_duty": "-120.5"}),
    Breaker("not_after_run_date", "declaration_date", {"declaration_date": "2021-07-01"}),
    Breaker("not_before_history_start", "declaration_date", {"declaration_date": "2019-12-31"}),
    Breaker("mass_physically_possible", "net_mass_kg", {"net_mass_kg": "500000001"}),
    Breaker("no_surrounding_spaces", "importer_id", {"importer_id": " QLRUBN9"}),
    Breaker("conflicting_duplicate", "declaration_id", {"item_price": "1.5"}, reuse_id=True),
    Breaker("date_in_range", "declaration_date", {"declaration_date": "1899-12-31"}),
]
BREAKER = {breaker.check: breaker for breaker in BREAKERS}
COLUMN_LEVEL = {"known_field", "required"}  # also whole columns: tested separately below


def _all_checks() -> set[str]:
    schema = RULES.schema
    checks = {check.name for column in schema.columns.values() for check in column.checks}
    checks |= {check.name for check in schema.checks}
    checks |= {name for name, _ in BUILT_IN_CHECKS.values()} | {IS_A_NUMBER[0], IS_A_DATE[0], DATE_IN_RANGE[0]}
    return checks | {"conflicting_duplicate"}


@pytest.fixture(scope="module")
def good(kcs_records) -> pd.DataFrame:
    """30 valid rows as read, with where they were read from."""
    valid = kcs_records[kcs_records["origin_country"].ne("ZZ") & kcs_records["departure_country"].ne("ZZ")]
    rows = valid.sample(30, random_state=23).reset_index(drop=True)
    return with_source(rows, "data/raw/good.csv")


def _break(good: pd.DataFrame, breaker: Breaker) -> pd.DataFrame:
    row = good.iloc[[7]].astype(object).assign(source_file="data/raw/broken.csv", source_row=1)
    row["declaration_id"] = good["declaration_id"].iloc[3] if breaker.reuse_id else f"BROKEN-{breaker.check}"
    for name, value in breaker.changes.items():
        row[name] = value
    return row


def _comparable(frame: pd.DataFrame) -> list[tuple]:
    columns = COLUMNS + SOURCE_FIELDS
    return [tuple(row) for row in frame[columns].astype(object).where(frame[columns].notna(), None).to_numpy()]


def test_every_check_has_a_breaking_row():
    assert {b.check for b in BREAKERS} | COLUMN_LEVEL == _all_checks()


@pytest.mark.parametrize("breaker", BREAKERS, ids=[b.check for b in BREAKERS])
def test_a_row_breaking_a_check_is_quarantined_with_it(good, breaker):
    broken = _break(good, breaker)
    records = pd.concat([good, broken], ignore_index=True)
    valid, rejected, report = validate(records, RULES)

    expected_rejected = [broken.iloc[0]]
    if breaker.reuse_id:  # both versions of the declaration are held back
        expected_rejected.insert(0, good.iloc[3])
    assert _comparable(rejected) == _comparable(pd.DataFrame(expected_rejected))  # unchanged
    for reasons in rejected["rejection_reasons"]:
        assert f"{breaker.field}: " in reasons and f"[{breaker.check}]" in reasons, reasons
    assert report["rejected_by_check"][breaker.check] == len(expected_rejected)
    entry = next(e for e in report["failed_checks"] if e["check"] == breaker.check)
    assert entry["field"] == breaker.field and entry["rows"] == len(expected_rejected)
    assert entry["rule"] and not entry["rule"].startswith("failed check")
    shown = broken[breaker.field].iloc[0]
    assert entry["example_values"][-1] == (None if shown is None else str(shown))
    # the good rows go on, typed, without where they came from
    held_back = set(rejected["declaration_id"])
    assert sorted(valid["declaration_id"]) == sorted(set(good["declaration_id"]) - held_back)
    assert list(valid.columns) == COLUMNS


def test_the_report_shows_the_bad_values(good):
    records = pd.concat([good, _break(good, BREAKER["hs6_six_digits"])], ignore_index=True)  # "10121"
    _, _, report = validate(records, RULES)
    [entry] = report["failed_checks"]
    assert entry["example_values"] == ["10121"]
    assert entry["example_declaration_ids"] == ["BROKEN-hs6_six_digits"]
    assert "leading zero" in entry["rule"]


@pytest.mark.parametrize(
    ("change", "field", "check", "message"),
    [
        ("extra", "discount", "known_field", "is not a declaration field"),
        ("missing", "importer_id", "required", "is required"),
    ],
)
def test_a_wrong_column_quarantines_every_row_with_its_reason(good, change, field, check, message):
    records = good.assign(discount="5%") if change == "extra" else good.drop(columns=["importer_id"])
    valid, rejected, report = validate(records, RULES)
    assert valid.empty and list(valid.columns) == COLUMNS
    assert len(rejected) == len(records) and report["rejected_by_check"] == {check: len(records)}
    assert rejected["rejection_reasons"].eq(f"{field}: {message} [{check}]").all()


def test_exact_repeats_from_another_file_are_dropped_not_quarantined(good):
    again = with_source(good.drop(columns=SOURCE_FIELDS).iloc[:5], "data/raw/overlapping_month.csv")
    records = pd.concat([good, again], ignore_index=True)
    valid, rejected, report = validate(records, RULES)
    assert report["duplicates_dropped"] == 5 and rejected.empty
    assert len(valid) == len(good)
    assert report["rows_in_by_source"] == {"data/raw/good.csv": 30, "data/raw/overlapping_month.csv": 5}
    assert report["rejected_by_source"] == {}


# ---------------------------------------------------------------------------------------------
# the stage: its files, and its failure above validate.max_reject_share


def _stage_workspace(tmp_path, monkeypatch, records: pd.DataFrame, max_reject_share: float) -> None:
    params = {
        "validate": {
            "max_reject_share": max_reject_share,
            "history_start": "2020-01-01",
            "run_date": "2021-06-30",
            "max_net_mass_kg": 5e8,
        }
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / INTERIM).mkdir(parents=True)
    write_part(records, part_path(tmp_path / INTERIM, 0))
    monkeypatch.chdir(tmp_path)


def test_stage_writes_valid_rows_quarantine_and_report(good, tmp_path, monkeypatch):
    records = pd.concat([good, _break(good, BREAKER["iso_country"])], ignore_index=True)  # "UK"
    _stage_workspace(tmp_path, monkeypatch, records, max_reject_share=0.05)
    stage.main()
    assert len(pd.read_parquet(VALIDATED)) == len(good)
    quarantined = pd.read_parquet(QUARANTINE)
    assert quarantined["declaration_id"].tolist() == ["BROKEN-iso_country"]
    assert quarantined[SOURCE_FIELDS].values.tolist() == [["data/raw/broken.csv", 1]]
    report = json.loads(VALIDATION_REPORT.read_text())
    assert report["rows_in"] == 31 and report["rejected_by_check"] == {"iso_country": 1}


def test_stage_fails_naming_the_top_checks_and_keeps_the_quarantine(good, tmp_path, monkeypatch):
    broken = [_break(good, BREAKER["hs6_six_digits"]).assign(declaration_id=f"ZERO-{i}") for i in range(3)]
    broken.append(_break(good, BREAKER["iso_country"]))
    records = pd.concat([good, *broken], ignore_index=True)
    _stage_workspace(tmp_path, monkeypatch, records, max_reject_share=0.1)  # 4 of 34 is 11.8%
    with pytest.raises(SystemExit) as failed:
        stage.main()
    message = str(failed.value.code)
    assert "4 of 34 rows rejected (11.76%), above validate.max_reject_share = 10.00%" in message
    assert message.index("hs6_six_digits on hs6_code: 3 rows") < message.index("iso_country on origin_country: 1 rows")
    assert "data/quarantine/rejected.parquet" in message
    assert len(pd.read_parquet(QUARANTINE)) == 4  # there for the steward to read
    assert json.loads(VALIDATION_REPORT.read_text())["rows_rejected"] == 4


# ---------------------------------------------------------------------------------------------
# nothing is lost or doubled, whatever the mix and the order


ROW_BREAKERS = [b for b in BREAKERS if not b.reuse_id]


@st.composite
def mixes(draw):
    """Rows from the good pool, fresh or broken by a breaker, and exact or altered repeats of
    earlier rows, each read from one of two files; and an order to shuffle them into."""
    kinds = st.sampled_from(["fresh", "broken", "repeat", "altered"])
    steps = draw(st.lists(st.tuples(kinds, st.integers(0, 10_000)), min_size=1, max_size=16))
    return steps, draw(st.randoms(use_true_random=False))


def _build(good: pd.DataFrame, steps) -> pd.DataFrame:
    rows = []
    for kind, pick in steps:
        if kind in ("repeat", "altered") and rows:
            row = rows[pick % len(rows)].copy()
            if kind == "altered":  # the same declaration with another price: a conflict
                row["item_price"] = f"{pick}.5"
        else:
            row = good.iloc[len(rows)].astype(object).copy()
            if kind == "broken":
                for name, value in ROW_BREAKERS[pick % len(ROW_BREAKERS)].changes.items():
                    row[name] = value
        row["source_file"] = f"data/raw/file{pick % 2}.csv"
        rows.append(row)
    return pd.DataFrame(rows).reset_index(drop=True)


def _contents(frame: pd.DataFrame) -> list[str]:
    """Each row's content, without where it was read from, as comparable text."""
    return [repr(row[: len(COLUMNS)]) for row in _comparable(frame)]


@settings(max_examples=15, deadline=None)
@given(mix=mixes())
def test_every_row_is_valid_quarantined_or_a_dropped_repeat(good, mix):
    steps, shuffle = mix
    records = _build(good, steps)
    valid, rejected, report = validate(records, RULES)

    assert len(valid) + len(rejected) + report["duplicates_dropped"] == len(records) == report["rows_in"]
    contents, quarantined = _contents(records), _contents(rejected)
    assert report["duplicates_dropped"] == len(contents) - len(set(contents))
    # each distinct row is in exactly one place: valid (by ID, once) or quarantined (unchanged)
    assert len(quarantined) == len(set(quarantined)) and set(quarantined) <= set(contents)
    assert valid["declaration_id"].is_unique
    assert not set(valid["declaration_id"]) & set(rejected["declaration_id"])
    assert len(set(contents)) == len(valid) + len(quarantined)

    # and the order of the input decides nothing
    order = list(range(len(records)))
    shuffle.shuffle(order)
    valid_again, rejected_again, report_again = validate(records.iloc[order], RULES)
    assert sorted(valid_again["declaration_id"]) == sorted(valid["declaration_id"])
    assert sorted(_contents(rejected_again)) == sorted(quarantined)
    assert report_again["rejected_by_check"] == report["rejected_by_check"]


# ---------------------------------------------------------------------------------------------
# a deliberately corrupted copy of (part of) the KCS history


@pytest.fixture(scope="module")
def kcs_source() -> pd.DataFrame:
    """4,000 rows of the KCS training file in its own layout, values as read."""
    frame = pd.read_csv(RAW / "df_syn_train_eng.csv", dtype=str, keep_default_na=False, na_values=[""])
    return frame.sample(4000, random_state=29).reset_index(drop=True)


def test_a_corrupted_history_yields_the_report_its_manifest_predicts(kcs_source):
    corrupted, manifest = corrupt_kcs(kcs_source, rate=0.005, seed=1)
    _, baseline_rejected, baseline = validate(with_source(KCS.to_canonical(kcs_source), "train.csv"), RULES)
    valid, rejected, report = validate(with_source(KCS.to_canonical(corrupted), "train.csv"), RULES)

    broken = manifest[manifest["check"] != ""]
    for entry in broken.itertuples():
        rows = rejected[rejected["declaration_id"] == entry.declaration_id]
        assert len(rows) >= 1, entry
        for reasons in rows["rejection_reasons"]:
            assert f"{entry.field}: " in reasons and f"[{entry.check}]" in reasons, (entry, reasons)
    # a conflicting duplicate holds back both versions of its declaration
    rows_held = broken["corruption"].map(lambda name: 2 if name == CONFLICTING_DUPLICATE else 1)
    expected = dict(baseline["rejected_by_check"])
    for check, count in rows_held.groupby(broken["check"]).sum().items():
        expected[check] = expected.get(check, 0) + int(count)
    assert report["rejected_by_check"] == expected
    assert report["rows_rejected"] == baseline["rows_rejected"] + rows_held.sum()
    assert report["duplicates_dropped"] == (manifest["corruption"] == EXACT_DUPLICATE).sum()
    held = set(broken["declaration_id"]) | set(baseline_rejected["declaration_id"])
    assert set(valid["declaration_id"]) == set(kcs_source["Declaration ID"]) - held
