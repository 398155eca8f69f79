"""Partner alerts (issue 17, CONTRACT section 5): every line checked and a file taken whole or not
at all, matching by dictionary lookup (plain and hashed) within the active window, lanes only
raised, the alert's reason first, and findings exported so that a partner's store matches the
same declarations. Partner keys never appear in any output or error."""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from serving.alerts import (
    FIELDS,
    SEVERITY,
    TARGETS,
    Alert,
    AlertFileError,
    AlertIndex,
    AlertStore,
    LiveAlerts,
    PartnerKeysError,
    apply_alerts,
    digest,
    export_findings,
    load_partner_keys,
    parse_alerts,
    write_alert_file,
)
from serving.audit import AuditStore
from serving.cli import app
from tests.serving.test_cli import _declarations as cli_declarations
from tests.serving.test_cli import fake_champion  # noqa: F401 - the stand-in champion of `score`

KEY = "s3cr3t-shared-key-of-KZ-7f1e"  # what the tests look for in every output
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


def _declarations(n: int = 3, **columns) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "declaration_id": [f"D{i}" for i in range(n)],
            "declaration_date": ["2026-11-15"] * n,
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
        frame[column] = values
    return frame


def _results(records: pd.DataFrame, lanes=None, selected_by=None) -> pd.DataFrame:
    n = len(records)
    return pd.DataFrame(
        {
            "declaration_id": records["declaration_id"].tolist(),
            "risk_score": [0.1] * n,
            "critical_score": [0.0] * n,
            "lane": lanes or ["green"] * n,
            "selected_by": selected_by or ["model"] * n,
            "reasons": [
                [{"feature": "tax_rate", "value": 8.0, "contribution": 0.5, "text": "tax rate 8%"}] for _ in range(n)
            ],
        }
    )


def _index(*alerts: dict, keys=KEYS) -> AlertIndex:
    return AlertIndex(parse_alerts(_lines(*alerts), keys), keys)


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
# the store


def test_import_is_all_or_nothing_and_the_same_alert_id_replaces(tmp_path):
    store = AlertStore(tmp_path / "audit.db")
    assert store.import_alerts(parse_alerts(_lines(_alert()), {})) == (1, 0)
    with pytest.raises(AlertFileError):
        parse_alerts(_lines(_alert(alert_id="B-1"), _alert(alert_id="B-2", lane="blue")), {})
    assert [a.alert_id for a in store.alerts()] == ["KZ-2026-000042"]  # nothing of the bad file
    assert store.import_alerts(parse_alerts(_lines(_alert(lane="yellow"), _alert(alert_id="B-1")), {})) == (1, 1)
    stored = {a.alert_id: a for a in store.alerts()}
    assert stored["KZ-2026-000042"].lane == "yellow" and len(stored) == 2
    store.close()


def test_the_alerts_table_lives_beside_the_audit_tables(tmp_path):
    path = tmp_path / "audit.db"
    AuditStore(path)
    AlertStore(path).import_alerts([Alert(**_alert())])
    AuditStore(path)  # the audit store opens the file with the alerts table in it
    assert [a.alert_id for a in AlertStore(path).alerts()] == ["KZ-2026-000042"]


def test_the_cli_refuses_a_bad_file_with_every_problem_and_imports_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("RISK_AUDIT_DB", str(tmp_path / "audit.db"))
    monkeypatch.delenv("RISK_PARTNER_KEYS", raising=False)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        _lines(
            _alert(),
            _alert(alert_id="X-2", target="ship", issued_on="2026-13-01"),
            _alert(alert_id="X-3", hashed=True, value="a" * 64),
        )
    )
    result = CliRunner().invoke(app, ["alerts", "import", str(bad)])
    assert result.exit_code == 2
    assert "line 2: issued_on: must be a date YYYY-MM-DD" in result.output
    assert "line 2: target: must be one of" in result.output
    assert "line 3: hashed: no key for issuer 'KZ' in RISK_PARTNER_KEYS" in result.output
    assert AlertStore(tmp_path / "audit.db").alerts() == []
    good = tmp_path / "good.jsonl"
    good.write_text(_lines(_alert()))
    result = CliRunner().invoke(app, ["alerts", "import", str(good)])
    assert result.exit_code == 0, result.output
    assert len(AlertStore(tmp_path / "audit.db").alerts()) == 1


# ------------------------------------------------------------------------------------------------
# matching


@pytest.mark.parametrize("hashed", [False, True])
@pytest.mark.parametrize("target", TARGETS)
def test_every_target_matches_plain_and_hashed(target, hashed):
    records = _declarations(
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
    index = _index(_alert(target=target, value=value, hashed=hashed))
    routed = apply_alerts(_results(records), records, index, max_reasons=3)
    assert routed["lane"].tolist() == ["red", "green", "green"]
    assert routed["selected_by"].tolist() == ["alert", "model", "model"]
    first = routed["reasons"][0][0]
    assert first == {
        "feature": "alert",
        "value": "KZ-2026-000042",
        "contribution": None,
        "text": f"partner alert KZ-2026-000042 from KZ on the {target}: cocaine found in a consignment of this importer",
    }
    assert routed["reasons"][0][1]["feature"] == "tax_rate"  # the model's reason follows


def test_a_hashed_alert_matches_only_with_the_right_key():
    alert = _alert(value=digest(b"another key", "IMP0"), hashed=True)
    records = _declarations()
    assert apply_alerts(_results(records), records, _index(alert), 3)["lane"].tolist() == ["green"] * 3
    without_key = AlertIndex(parse_alerts(_lines(_alert(value=digest(KEYS["KZ"], "IMP0"), hashed=True)), KEYS), {})
    assert without_key.without_key == {"KZ"}
    assert apply_alerts(_results(records), records, without_key, 3)["lane"].tolist() == ["green"] * 3


@pytest.mark.parametrize(
    ("day", "active"),
    [("2026-11-01", False), ("2026-11-02", True), ("2026-12-25", True), ("2027-02-02", True), ("2027-02-03", False)],
)
def test_an_alert_is_active_from_issued_on_through_valid_until(day, active):
    records = _declarations(1, importer_id=["QLRUBN9"], declaration_date=[day])
    routed = apply_alerts(_results(records), records, _index(_alert()), 3)
    assert routed["lane"].tolist() == (["red"] if active else ["green"])
    typed = records.assign(declaration_date=pd.to_datetime(records["declaration_date"]))  # as serving.rules has them
    assert apply_alerts(_results(records), typed, _index(_alert()), 3)["lane"].tolist() == routed["lane"].tolist()


def test_an_alert_never_lowers_a_lane():
    records = _declarations(3, importer_id=["QLRUBN9"] * 3)
    results = _results(records, lanes=["red", "yellow", "green"], selected_by=["value", "rule", "model"])
    routed = apply_alerts(results, records, _index(_alert(lane="yellow")), 3)
    assert routed["lane"].tolist() == ["red", "yellow", "yellow"]
    assert routed["selected_by"].tolist() == ["value", "alert", "alert"]  # a stricter lane keeps its source
    assert all(reasons[0]["feature"] == "alert" for reasons in routed["reasons"])  # stated whatever the lane


def test_alert_reasons_come_first_strictest_first_within_max_reasons_and_order_free():
    records = _declarations(1, importer_id=["QLRUBN9"], container_number=[CONTAINER])
    alerts = [_alert(alert_id="Y-1", lane="yellow"), _alert(alert_id="R-1", target="container_number", value=CONTAINER)]
    for ordered in (alerts, alerts[::-1]):
        routed = apply_alerts(_results(records, lanes=["yellow"]), records, _index(*ordered), max_reasons=2)
        assert routed["lane"].tolist() == ["red"]
        assert [r["value"] for r in routed["reasons"][0]] == ["R-1", "Y-1"]
    rule = {"feature": "risk_profile", "value": "timber", "contribution": None, "text": "timber"}
    results = _results(records, lanes=["red"], selected_by=["rule"]).assign(reasons=[[rule]])
    routed = apply_alerts(results, records, _index(alerts[0]), max_reasons=3)
    assert [r["feature"] for r in routed["reasons"][0]] == ["alert", "risk_profile"]


def test_no_alerts_leave_the_answer_untouched():
    records = _declarations()
    results = _results(records)
    assert apply_alerts(results, records, AlertIndex((), {}), 3) is results


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
    records = _declarations(1_000, importer_id=[f"W{i * 97}" if i % 2 else f"N{i}" for i in range(1_000)])
    routed = apply_alerts(_results(records), records, index, 3)
    assert routed["lane"].eq("red").sum() == 500  # the odd ones (declaration 7's seller is hashed-listed too)
    assert [r["value"] for r in routed["reasons"][7]][:2] == ["A-679", "H-1"]
    identifiers = 4  # importer, declarant, seller, HS6+origin: no container or bill of lading declared
    assert index.lookups == 1_000 * identifiers * 2  # one plain and one hashed (one keyed issuer) lookup each
    small = AlertIndex(many[:10], KEYS)
    apply_alerts(_results(records), records, small, 3)
    assert small.lookups == 1_000 * identifiers  # no hashed issuer: the same lookups per declaration, not per alert
    assert index.active_by_issuer(day) == {"KZ": 100_001}


def test_live_alerts_see_an_import_without_a_restart(tmp_path):
    path = tmp_path / "audit.db"
    live = LiveAlerts(path, None)
    assert len(live.current()) == 0  # no store yet: nothing matches, nothing is created
    assert not path.exists()
    store = AlertStore(path)
    store.import_alerts([Alert(**_alert())])
    first = live.current()
    assert len(first) == 1 and live.current() is first  # unchanged table: the same index
    store.import_alerts([Alert(**_alert(lane="yellow"))])  # a replacement changes the stamp
    assert live.current().plain[("importer_id", "QLRUBN9")][0].lane == "yellow"
    store.import_alerts([Alert(**_alert(alert_id="B-2"))])
    assert len(live.current()) == 2
    live.close()


# ------------------------------------------------------------------------------------------------
# keys and export


def _keys_file(tmp_path: Path, partner: str = "KZ") -> Path:
    (tmp_path / "kz.key").write_text(f"  {KEY}\n")
    mapping = tmp_path / "partners.json"
    mapping.write_text(json.dumps({partner: str(tmp_path / "kz.key")}))
    return mapping


def test_partner_keys_are_read_stripped_and_errors_never_show_a_key(tmp_path):
    assert load_partner_keys(_keys_file(tmp_path)) == KEYS
    assert load_partner_keys(None) == {}
    (tmp_path / "bad.key").write_bytes(KEY.encode() + b"\xff")
    for mapping in ({"KZ": str(tmp_path / "bad.key")}, {"KZ": str(tmp_path / "missing.key")}, {"KZ": 3}):
        (tmp_path / "p.json").write_text(json.dumps(mapping))
        with pytest.raises(PartnerKeysError) as refused:
            load_partner_keys(tmp_path / "p.json")
        assert KEY not in str(refused.value)
    (tmp_path / "p.json").write_text(KEY)
    with pytest.raises(PartnerKeysError) as refused:
        load_partner_keys(tmp_path / "p.json")
    assert KEY not in str(refused.value)


def _audit_with_findings(path: Path) -> pd.DataFrame:
    """A store with four scored declarations; two were found fraud or critical in October."""
    records = _declarations(
        4,
        declaration_date=["2026-10-01", "2026-10-02", "2026-10-03", "2026-10-04"],
        container_number=[CONTAINER, None, None, None],
    )
    audit = AuditStore(path)
    results = _results(records)
    audit.record_decisions(records.astype(object).where(records.notna(), None).to_dict("records"), results, "1")
    audit.record_outcomes(
        [
            {
                "declaration_id": "D0",
                "inspected_on": "2026-10-10",
                "result": "critical",
                "notes": "weapons; importer IMP0",
            },
            {"declaration_id": "D1", "inspected_on": "2026-10-11", "result": "fraud", "notes": "undervalued"},
            {"declaration_id": "D2", "inspected_on": "2026-10-12", "result": "clean"},
            {"declaration_id": "D3", "inspected_on": "2026-11-20", "result": "fraud"},  # outside the period
        ]
    )
    return records


def test_export_writes_the_findings_of_the_period_as_alerts_of_the_center(tmp_path):
    _audit_with_findings(tmp_path / "audit.db")
    findings = export_findings(tmp_path / "audit.db", dt.date(2026, 10, 1), dt.date(2026, 10, 31), "XX")
    assert findings.outcomes == 2 and findings.without_decision == 0
    got = {(a.target, a.value) for a in findings.alerts}
    assert got == {("importer_id", "IMP0"), ("container_number", CONTAINER), ("importer_id", "IMP1")}
    assert {a.issued_by for a in findings.alerts} == {"XX"}
    first = findings.alerts[0]
    assert first.issued_on == "2026-10-01" and first.valid_until == "2027-04-08" and first.lane == "red"
    assert first.reason == "critical found on inspection on 2026-10-10: weapons; importer IMP0"
    write_alert_file(findings.alerts, tmp_path / "out.jsonl")
    assert parse_alerts((tmp_path / "out.jsonl").read_text(), {}) == findings.alerts  # importable as written


def test_round_trip_with_a_partner_key_matches_the_same_declarations_and_leaks_nothing(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    center, partner = tmp_path / "center", tmp_path / "partner"
    center.mkdir(), partner.mkdir()
    records = _audit_with_findings(center / "audit.db")
    # the center holds the key it shares with KZ; KZ holds the same key under the center's code, XX
    monkeypatch.setenv("RISK_AUDIT_DB", str(center / "audit.db"))
    monkeypatch.setenv("RISK_PARTNER_KEYS", str(_keys_file(center, "KZ")))
    monkeypatch.setenv("RISK_CENTER_CODE", "XX")
    out = tmp_path / "for-kz.jsonl"
    exported = CliRunner().invoke(
        app,
        ["alerts", "export", "--since", "2026-10-01", "--until", "2026-10-31", "--output", str(out), "--partner", "KZ"],
    )
    assert exported.exit_code == 0, exported.output
    text = out.read_text()
    for identifier in records[["declaration_id", "importer_id", "declarant_id", "seller_id"]].to_numpy().ravel():
        assert str(identifier) not in text
    assert CONTAINER not in text and "[withheld]" in text
    assert all(json.loads(line)["hashed"] for line in text.splitlines())

    monkeypatch.setenv("RISK_AUDIT_DB", str(partner / "audit.db"))
    monkeypatch.setenv("RISK_PARTNER_KEYS", str(_keys_file(partner, "XX")))
    monkeypatch.setenv("RISK_CENTER_CODE", "KZ")
    imported = CliRunner().invoke(app, ["alerts", "import", str(out)])
    assert imported.exit_code == 0, imported.output
    live = LiveAlerts(partner / "audit.db", partner / "partners.json")
    routed = apply_alerts(_results(records), records, live.current(), 3)
    assert routed["lane"].tolist() == ["red", "red", "green", "green"]
    assert routed["selected_by"].tolist() == ["alert", "alert", "model", "model"]
    live.close()

    wrong = CliRunner().invoke(
        app,
        [
            "alerts",
            "export",
            "--since",
            "2026-10-01",
            "--until",
            "2026-10-31",
            "--output",
            str(tmp_path / "x.jsonl"),
            "--partner",
            "BE",
        ],
    )
    assert wrong.exit_code == 2 and "no key for partner 'BE'" in wrong.output
    for output in (exported.output, imported.output, wrong.output, caplog.text, text):
        assert KEY not in output


def test_an_unreadable_key_file_is_named_not_shown(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    (tmp_path / "kz.key").write_bytes(KEY.encode() + b"\xfe")
    (tmp_path / "partners.json").write_text(json.dumps({"KZ": str(tmp_path / "kz.key")}))
    monkeypatch.setenv("RISK_AUDIT_DB", str(tmp_path / "audit.db"))
    monkeypatch.setenv("RISK_PARTNER_KEYS", str(tmp_path / "partners.json"))
    (tmp_path / "a.jsonl").write_text(_lines(_alert()))
    result = CliRunner().invoke(app, ["alerts", "import", str(tmp_path / "a.jsonl")])
    assert result.exit_code == 2 and "is not UTF-8 text" in result.output
    live = LiveAlerts(tmp_path / "audit.db", tmp_path / "partners.json")
    assert live.keys == {} and live.keys_error
    for output in (result.output, caplog.text, live.keys_error):
        assert KEY not in output


def test_the_score_command_matches_an_import_made_after_the_store_was_opened(tmp_path, monkeypatch, fake_champion):  # noqa: F811
    """`customs-risk score` with a stand-in champion (tests/serving/test_cli.py): green from the
    model, red with the alert's reason first once an alert on the importer is imported."""
    records = cli_declarations({}, {})
    monkeypatch.setenv("RISK_AUDIT_DB", str(tmp_path / "audit.db"))
    monkeypatch.delenv("RISK_PARTNER_KEYS", raising=False)
    records.to_csv(tmp_path / "day.csv", index=False)

    def score():
        result = CliRunner().invoke(
            app, ["score", "--input", str(tmp_path / "day.csv"), "--output", str(tmp_path / "o.csv")]
        )
        assert result.exit_code == 0, result.output
        return pd.read_csv(tmp_path / "o.csv", dtype=str)

    assert score()["lane"].tolist() == ["green", "green"]
    day = str(records["declaration_date"][0])
    until = (dt.date.fromisoformat(day) + dt.timedelta(days=30)).isoformat()
    (tmp_path / "a.jsonl").write_text(
        _lines(_alert(value=str(records["importer_id"][0]), issued_on=day, valid_until=until))
    )
    assert CliRunner().invoke(app, ["alerts", "import", str(tmp_path / "a.jsonl")]).exit_code == 0
    scored = score()
    assert scored["lane"].tolist() == ["red", "red"] and scored["selected_by"].tolist() == ["alert", "alert"]
    assert json.loads(scored["reasons"][0])[0]["value"] == "KZ-2026-000042"


_LANES = st.sampled_from(["green", "yellow", "red"])
_ALERTS = st.lists(
    st.builds(
        lambda i, importer, lane, start, length: Alert(
            f"P-{i}",
            "KZ",
            (dt.date(2026, 11, 1) + dt.timedelta(days=start)).isoformat(),
            (dt.date(2026, 11, 1) + dt.timedelta(days=start + length)).isoformat(),
            "importer_id",
            f"IMP{importer}",
            lane,
            "r",
            False,
        ),
        st.integers(0, 50),
        st.integers(0, 4),
        st.sampled_from(["yellow", "red"]),
        st.integers(0, 30),
        st.integers(1, 30),
    ),
    max_size=8,
    unique_by=lambda a: a.alert_id,
)


@settings(max_examples=60, deadline=None)
@given(alerts=_ALERTS, lanes=st.lists(_LANES, min_size=5, max_size=5), data=st.data())
def test_properties_never_lower_a_lane_and_ignore_the_order_of_alerts_and_declarations(alerts, lanes, data):
    records = _declarations(5, importer_id=[f"IMP{i}" for i in range(5)], declaration_date=["2026-11-20"] * 5)
    results = _results(records, lanes=lanes)
    routed = apply_alerts(results, records, AlertIndex(alerts, {}), 3)
    assert all(SEVERITY[a] >= SEVERITY[b] for a, b in zip(routed["lane"], lanes))
    shuffled_alerts = data.draw(st.permutations(alerts))
    order = data.draw(st.permutations(range(5)))
    again = apply_alerts(
        results.iloc[order].reset_index(drop=True),
        records.iloc[order].reset_index(drop=True),
        AlertIndex(shuffled_alerts, {}),
        3,
    )
    assert again.set_index("declaration_id").loc[routed["declaration_id"]].reset_index().equals(routed)
