"""The alerts of the alert benchmark are what it says: active, partly hashed, a few on the
declarations' own importers, and found by the index as a service would find them."""

from __future__ import annotations

from bench.alerts import PARTNERS, alerts_in_force
from serving.alerts import AlertIndex


def test_the_planted_alerts_match_and_the_others_never_do():
    importers = ["IMP-A", "IMP-B", "IMP-C"]
    alerts = alerts_in_force(30_000, importers, "2021-03-31")
    assert len(alerts) == 30_000 and len({a.alert_id for a in alerts}) == 30_000
    assert sum(a.hashed for a in alerts) == 3_000
    planted = [a for i, a in enumerate(alerts) if i % 10_000 == 0]
    index = AlertIndex(alerts, PARTNERS)
    matched = {a.alert_id for importer in importers for a in index.matching({"importer_id": importer}, "2021-03-31")}
    assert matched == {a.alert_id for a in planted}
    assert index.matching({"importer_id": "IMP-Z", "container_number": "MSCU1234566"}, "2021-03-31") == []
    # one lookup per identifier and per partner key with hashed alerts, whatever the alerts' number
    index.lookups = 0
    index.matching({"importer_id": "IMP-A", "declarant_id": "D1"}, "2021-03-31")
    assert index.lookups == 2 * (1 + len(PARTNERS))
