"""Partner alerts (issue 17, CONTRACT section 5), the file and the matching: every line checked and
a file taken whole or not at all, and a declaration matched by dictionary lookup (plain and
hashed) within the alert's active window. What a match does to a lane is the decision's
(tests/serving/test_decide.py); the store, the keys and the export are the exchange's
(tests/serving/test_alert_exchange.py)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from features.schema import Declarations
from serving.alerts import (
    FIELDS,
    TARGETS,
    Alert,
    AlertFileError,
    AlertIndex,
    declaration_identifiers,
    digest,
    parse_alerts,
)

KEY = "s3cr3t-shared-key-of-KZ-7f1e"
KEYS = {"KZ": KEY.encode()}
CONTAINER = "MSCU1234566"  # a valid ISO 6346 number


def _alert(**fields) -> dict:
    alert = {
        "alert_id": "KZ-2026-000042",
        "issued_by": "KZ",
        "issued_on": "2026-11-02",
        "valid_until": "2027-02-02",
        "target": "importer_id",
        "value": "QLRUBN9",
        "lane": "red",
        "reason": "cocaine found in a consignment of this importer",
        "hashed": False,
    }
    alert.update(fields)
    return alert


def _lines(*alerts) -> str:
    return "".join((a if isinstance(a, str) else json.dumps(a)) + "\n" for a in alerts)


def _declarations(n: int = 3, **columns) -> Declarations:
    """Typed declarations holding the fields alerts look at."""
    frame = pd.DataFrame(
        {
            "declaration_id": [f"D{i}" for i in range(n)],
            "declaration_date": pd.to_datetime(["2026-11-15"] * n),
            "importer_id": [f"IMP{i}" for i in range(n)],
            "declarant_id": [f"DCL{i}" for i in range(n)],
            "seller_id": [f"SEL{i}" for i in range(n)],
            "hs6_code": ["440890"] * n,
            "origin_country": ["DE"] * n,
            "container_number": [None] * n,
            "bill_of_lading": [None] * n,
        }
    )
    for column, values in columns.items():
        frame[column] = pd.to_datetime(values) if column == "declaration_date" else values
    return Declarations.of(frame)


def _index(*alerts: dict, keys=KEYS) -> AlertIndex:
    return AlertIndex(parse_alerts(_lines(*alerts), keys), keys)


def _fired(index: AlertIndex, declarations: Declarations) -> dict[int, list[str]]:
    return {row: [a.alert_id for a in alerts] for row, alerts in index.fired(declarations).items()}


# ------------------------------------------------------------------------------------------------
# the file, line by line


def test_the_contract_example_parses():
    [alert] = parse_alerts(_lines(_alert()), {})
    assert alert == Alert(**_alert())
    assert list(alert.as_record()) == list(FIELDS)


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"alert_id": ""}, "alert_id", "non-empty string"),
        ({"alert_id": 42}, "alert_id", "non-empty string"),
        ({"issued_by": "kz"}, "issued_by", "partner code"),
        ({"issued_on": "2026-11-2"}, "issued_on", "YYYY-MM-DD"),
        ({"issued_on": "2026-02-30"}, "issued_on", "YYYY-MM-DD"),
        ({"valid_until": "02/02/2027"}, "valid_until", "YYYY-MM-DD"),
        ({"valid_until": "2026-11-02"}, "valid_until", "after issued_on"),
        ({"valid_until": "2026-10-01"}, "valid_until", "after issued_on"),
        ({"target": "importer"}, "target", "one of importer_id"),
        ({"value": ""}, "value", "non-empty string"),
        ({"value": "x" * 65}, "value", "at most 64"),
        ({"target": "container_number", "value": "MSCU1234567"}, "value", "ISO 6346"),
        ({"target": "hs6_code+origin_country", "value": "440890"}, "value", "440890|BE"),
        ({"target": "hs6_code+origin_country", "value": "440890|QQ"}, "value", "country"),
        ({"lane": "green"}, "lane", "one of yellow, red"),
        ({"reason": " "}, "reason", "non-empty string"),
        ({"hashed": "false"}, "hashed", "true or false"),
        ({"hashed": True, "value": "ABC"}, "value", "64 lowercase hex"),
        ({"hashed": True, "value": "A" * 64}, "value", "64 lowercase hex"),
        ({"hashed": True, "issued_by": "BE", "value": "a" * 64}, "hashed", "no key for issuer 'BE'"),
        ({"extra": 1}, "extra", "unknown field"),
    ],
)
def test_each_field_is_checked_with_its_line(changes, field, message):
    with pytest.raises(AlertFileError) as refused:
        parse_alerts(_lines(_alert(alert_id="A-1"), _alert(**changes)), KEYS)
    assert [(p.line, p.field) for p in refused.value.problems] == [(2, field)]
    assert message in refused.value.problems[0].message
    assert str(refused.value.problems[0]).startswith(f"line 2: {field}: ")


def test_a_missing_field_bad_json_and_a_repeated_id_are_reported_every_one():
    missing = _alert(alert_id="A-2")
    del missing["reason"]
    text = _lines(_alert(alert_id="A-1"), "{not json", "[1, 2]", missing, _alert(alert_id="A-1"))
    with pytest.raises(AlertFileError) as refused:
        parse_alerts(text, {})
    assert [(p.line, p.field) for p in refused.value.problems] == [
        (2, "json"),
        (3, "json"),
        (4, "reason"),
        (5, "alert_id"),
    ]
    assert "also on line 1" in refused.value.problems[-1].message


def test_every_target_with_a_valid_value_and_a_hashed_value_parses():
    values = {"container_number": CONTAINER, "hs6_code+origin_country": "440890|BE"}
    lines = [_alert(alert_id=f"P-{t}", target=t, value=values.get(t, "X1")) for t in TARGETS]
    lines += [_alert(alert_id=f"H-{t}", target=t, value=digest(KEYS["KZ"], "X1"), hashed=True) for t in TARGETS]
    assert len(parse_alerts(_lines(*lines), KEYS)) == 2 * len(TARGETS)


# ------------------------------------------------------------------------------------------------
# matching


@pytest.mark.parametrize("hashed", [False, True])
@pytest.mark.parametrize("target", TARGETS)
def test_every_target_matches_plain_and_hashed(target, hashed):
    declarations = _declarations(
        container_number=[CONTAINER, None, None],
        bill_of_lading=["BL-77", None, None],
        origin_country=["BE", "DE", "DE"],
    )
    identifier = {
        "importer_id": "IMP0",
        "declarant_id": "DCL0",
        "seller_id": "SEL0",
        "container_number": CONTAINER,
        "bill_of_lading": "BL-77",
        "hs6_code+origin_country": "440890|BE",
    }[target]
    value = digest(KEYS["KZ"], identifier) if hashed else identifier
    assert _fired(_index(_alert(target=target, value=value, hashed=hashed)), declarations) == {0: ["KZ-2026-000042"]}


def test_a_declaration_is_matched_on_the_identifiers_it_declares_and_its_day():
    declarations = _declarations(2, container_number=[CONTAINER, None], origin_country=["BE", "ZZ"])
    identifiers, days = declaration_identifiers(declarations)
    assert identifiers[0] == {
        "importer_id": "IMP0",
        "declarant_id": "DCL0",
        "seller_id": "SEL0",
        "container_number": CONTAINER,
        "hs6_code+origin_country": "440890|BE",
    }
    assert "container_number" not in identifiers[1] and "bill_of_lading" not in identifiers[1]
    assert days == ["2026-11-15", "2026-11-15"]


def test_a_hashed_alert_matches_only_with_the_right_key():
    declarations = _declarations()
    assert _fired(_index(_alert(value=digest(b"another key", "IMP0"), hashed=True)), declarations) == {}
    without_key = AlertIndex(parse_alerts(_lines(_alert(value=digest(KEYS["KZ"], "IMP0"), hashed=True)), KEYS), {})
    assert without_key.without_key == {"KZ"}
    assert _fired(without_key, declarations) == {}


@pytest.mark.parametrize(
    ("day", "active"),
    [("2026-11-01", False), ("2026-11-02", True), ("2026-12-25", True), ("2027-02-02", True), ("2027-02-03", False)],
)
def test_an_alert_is_active_from_issued_on_through_valid_until(day, active):
    declarations = _declarations(1, importer_id=["QLRUBN9"], declaration_date=[day])
    assert _fired(_index(_alert()), declarations) == ({0: ["KZ-2026-000042"]} if active else {})


def test_the_alerts_that_fire_come_strictest_first_whatever_their_order():
    declarations = _declarations(1, importer_id=["QLRUBN9"], container_number=[CONTAINER])
    alerts = [_alert(alert_id="Y-1", lane="yellow"), _alert(alert_id="R-1", target="container_number", value=CONTAINER)]
    for ordered in (alerts, alerts[::-1]):
        assert _fired(_index(*ordered), declarations) == {0: ["R-1", "Y-1"]}


def test_no_alerts_match_nothing():
    assert AlertIndex((), {}).fired(_declarations()) == {}


def test_matching_is_a_dictionary_lookup_per_identifier_whatever_the_number_of_alerts():
    day = "2026-11-15"
    many = [
        Alert(f"A-{i}", "KZ", "2026-11-01", "2027-01-01", "importer_id", f"W{i}", "red", "r", False)
        for i in range(100_000)
    ]
    many.append(
        Alert("H-1", "KZ", "2026-11-01", "2027-01-01", "seller_id", digest(KEYS["KZ"], "SEL7"), "red", "r", True)
    )
    index = AlertIndex(many, KEYS)
    assert isinstance(index.plain, dict) and len(index.plain) == 100_000
    declarations = _declarations(1_000, importer_id=[f"W{i * 97}" if i % 2 else f"N{i}" for i in range(1_000)])
    fired = _fired(index, declarations)
    assert sorted(fired) == list(range(1, 1_000, 2))  # the odd ones (declaration 7's seller is hashed-listed too)
    assert fired[7] == ["A-679", "H-1"]
    identifiers = 4  # importer, declarant, seller, HS6+origin: no container or bill of lading declared
    assert index.lookups == 1_000 * identifiers * 2  # one plain and one hashed (one keyed issuer) lookup each
    small = AlertIndex(many[:10], KEYS)
    small.fired(declarations)
    assert small.lookups == 1_000 * identifiers  # no hashed issuer: the same lookups per declaration, not per alert
    assert index.active_by_issuer(day) == {"KZ": 100_001}
