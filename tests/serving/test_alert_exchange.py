"""The exchange of partner alerts (issue 17, CONTRACT section 5): an import into the center's store
is all or nothing and the same alert_id replaces, the service and the CLI see an import without a
restart, and findings are exported so that a partner's store matches the same declarations.
Partner keys never appear in any output or error."""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from models.bundle import validated_declarations
from serving.alert_exchange import (
    AlertStore,
    LiveAlerts,
    PartnerKeysError,
    export_findings,
    load_partner_keys,
    write_alert_file,
)
from serving.alerts import Alert, AlertFileError, parse_alerts
from serving.audit import AuditStore
from serving.cli import app
from serving.decide import decide
from tests.e2e.stack import contract_example
from tests.serving.test_alerts import CONTAINER, KEY, KEYS, _alert, _lines
from tests.serving.test_cli import _declarations as cli_declarations
from tests.serving.test_cli import fake_champion  # noqa: F401 - the stand-in champion of `score`
from tests.serving.test_decide import StandInModel


def _sent(n: int, **columns) -> pd.DataFrame:
    """Declarations as a client sends them: the contract's example, each its own importer,
    declarant and seller, with `columns` changed."""
    records = pd.DataFrame(
        [
            dict(
                contract_example(),
                declaration_id=f"D{i}",
                importer_id=f"IMP{i}",
                declarant_id=f"DCL{i}",
                seller_id=f"SEL{i}",
            )
            for i in range(n)
        ]
    )
    for column, values in columns.items():
        records[column] = values
    return records


# ------------------------------------------------------------------------------------------------
# the store


def test_import_is_all_or_nothing_and_the_same_alert_id_replaces(store_location):
    store = AlertStore(store_location)
    assert store.import_alerts(parse_alerts(_lines(_alert()), {})) == (1, 0)
    with pytest.raises(AlertFileError):
        parse_alerts(_lines(_alert(alert_id="B-1"), _alert(alert_id="B-2", lane="blue")), {})
    assert [a.alert_id for a in store.alerts()] == ["KZ-2026-000042"]  # nothing of the bad file
    assert store.import_alerts(parse_alerts(_lines(_alert(lane="yellow"), _alert(alert_id="B-1")), {})) == (1, 1)
    stored = {a.alert_id: a for a in store.alerts()}
    assert stored["KZ-2026-000042"].lane == "yellow" and len(stored) == 2
    store.close()


def test_the_alerts_table_lives_beside_the_audit_tables(store_location):
    path = store_location
    AuditStore(path)
    AlertStore(path).import_alerts([Alert(**_alert())])
    AuditStore(path)  # the audit store opens the file with the alerts table in it
    assert [a.alert_id for a in AlertStore(path).alerts()] == ["KZ-2026-000042"]


def test_the_cli_refuses_a_bad_file_with_every_problem_and_imports_nothing(store_location, tmp_path, monkeypatch):
    monkeypatch.setenv("RISK_AUDIT_DB", str(store_location))
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
    assert AlertStore(store_location).alerts() == []
    good = tmp_path / "good.jsonl"
    good.write_text(_lines(_alert()))
    result = CliRunner().invoke(app, ["alerts", "import", str(good)])
    assert result.exit_code == 0, result.output
    assert len(AlertStore(store_location).alerts()) == 1


def test_live_alerts_see_an_import_without_a_restart(store_location):
    live = LiveAlerts(store_location, None)
    assert len(live.current()) == 0  # no store (or no alerts table) yet: nothing matches, nothing is created
    assert isinstance(store_location, str) or not store_location.exists()
    store = AlertStore(store_location)
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


def _audit_with_findings(path: Path | str) -> pd.DataFrame:
    """A store with four scored declarations; two were found fraud or critical in October."""
    records = _sent(
        4,
        declaration_date=["2026-10-01", "2026-10-02", "2026-10-03", "2026-10-04"],
        container_number=[CONTAINER, None, None, None],
    )
    audit = AuditStore(path)
    results = decide(StandInModel(), validated_declarations(records))
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


def test_export_writes_the_findings_of_the_period_as_alerts_of_the_center(store_location, tmp_path):
    _audit_with_findings(store_location)
    findings = export_findings(store_location, dt.date(2026, 10, 1), dt.date(2026, 10, 31), "XX")
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
    routed = decide(StandInModel(), validated_declarations(records), alerts=live.current())
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
