"""What partner alerts cost a scoring call: the champion scoring declarations with no alert in
force, then with 100,000 (plain and hashed, some on the declarations' own importers), in one
process, side by side. Matching is one dictionary lookup per identifier and per partner key, so
the cost should follow the declarations, not the alerts.

    .venv/bin/python -m bench.alerts [--alerts 100000] [--declarations 1000]
"""

from __future__ import annotations

# models first: it sets OMP_WAIT_POLICY, which OpenMP reads once, when LightGBM loads it
import models  # noqa: F401

# isort: split
import argparse
import json
import time

import numpy as np
import pandas as pd

from bench.workers import fastest_seconds
from features.schema import DECLARATION_FIELDS
from models.bundle import RiskModel, validated_declarations
from pipelines.paths import BUNDLE, VALIDATED
from serving.alerts import EMPTY_INDEX, Alert, AlertIndex, digest
from serving.decide import decide

PARTNERS = {"KZ": b"kz-shared-key", "UZ": b"uz-shared-key"}
CALLS = 50  # single-declaration calls per setting


def alerts_in_force(count: int, importers: list[str], day: str, seed: int = 0) -> list[Alert]:
    """`count` alerts active on `day`: one in ten hashed under a partner's key, one in ten thousand
    on an importer of `importers` (so a few declarations match), the rest on identifiers no
    declaration holds, spread over the targets."""
    rng = np.random.default_rng(seed)
    targets = ("importer_id", "declarant_id", "container_number", "bill_of_lading")
    alerts = []
    for i in range(count):
        planted = i % 10_000 == 0
        target = "importer_id" if planted else targets[i % len(targets)]
        value = importers[int(rng.integers(len(importers)))] if planted else f"NOT-DECLARED-{i:07d}"
        issuer = ("KZ", "UZ")[(i // 10) % 2]
        hashed = i % 10 == 1
        alerts.append(
            Alert(
                alert_id=f"{issuer}-BENCH-{i:07d}",
                issued_by=issuer,
                issued_on="2000-01-01",
                valid_until="2099-12-31",
                target=target,
                value=digest(PARTNERS[issuer], value) if hashed else value,
                lane=("red", "yellow")[i % 2],
                reason="benchmark alert",
                hashed=hashed,
            )
        )
    assert all(a.active_on(day) for a in alerts)
    return alerts


def measure(model: RiskModel, declarations: pd.DataFrame, index: AlertIndex) -> dict:
    def score(records: pd.DataFrame) -> pd.DataFrame:
        """As the service scores a request: checked, then decided."""
        return decide(model, validated_declarations(records), alerts=index)

    single = [declarations.iloc[[i]] for i in range(CALLS)]
    one = float(np.median([fastest_seconds(lambda r=r: score(r), 1) for r in single]))
    batch = fastest_seconds(lambda: score(declarations), 3)
    fired = int((score(declarations)["selected_by"] == "alert").sum())
    return {"one_declaration_ms": one * 1e3, "batch_seconds": batch, "batch_alert_picks": fired}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=100_000)
    parser.add_argument("--declarations", type=int, default=1000)
    args = parser.parse_args(argv)
    model = RiskModel.load(BUNDLE)
    history = pd.read_parquet(VALIDATED, columns=DECLARATION_FIELDS)
    declarations = history.tail(args.declarations).reset_index(drop=True)
    day = declarations["declaration_date"].max().strftime("%Y-%m-%d")
    started = time.perf_counter()
    index = AlertIndex(alerts_in_force(args.alerts, declarations["importer_id"].unique().tolist(), day), PARTNERS)
    built = time.perf_counter() - started
    without, with_alerts = measure(model, declarations, EMPTY_INDEX), measure(model, declarations, index)
    result = {
        "alerts": args.alerts,
        "declarations": args.declarations,
        "index_build_seconds": built,
        "without_alerts": without,
        "with_alerts": with_alerts,
        "one_declaration_ratio": with_alerts["one_declaration_ms"] / without["one_declaration_ms"],
        "batch_ratio": with_alerts["batch_seconds"] / without["batch_seconds"],
    }
    print(json.dumps(result))
    print(
        f"{args.alerts:,} alerts in force (index built in {built:.1f} s): one declaration "
        f"{without['one_declaration_ms']:.2f} -> {with_alerts['one_declaration_ms']:.2f} ms "
        f"({result['one_declaration_ratio']:.2f}x); {args.declarations:,} declarations "
        f"{without['batch_seconds']:.3f} -> {with_alerts['batch_seconds']:.3f} s ({result['batch_ratio']:.2f}x), "
        f"{with_alerts['batch_alert_picks']} sent to a lane by an alert"
    )


if __name__ == "__main__":
    main()
