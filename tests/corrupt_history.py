"""A deliberately corrupted copy of the KCS history, made deterministically, with a manifest of
what was broken in which row and which check must catch it.

    PYTHONPATH=. python -m tests.corrupt_history --out /tmp/corrupt --run

writes /tmp/corrupt/data/raw/*.csv (KCS layout), manifest.csv and params.yaml (the project's),
then runs the real ingest and validate stages there; the steward's report is
/tmp/corrupt/metrics/validation.json, the rows /tmp/corrupt/data/quarantine/rejected.parquet.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]


def _number(values: pd.Series) -> pd.Series:
    return pd.to_numeric(values, errors="coerce")


def _any(rows: pd.DataFrame) -> pd.Series:
    return pd.Series(True, index=rows.index)


@dataclass(frozen=True)
class Corruption:
    name: str  # what went wrong at the source
    check: str  # the check that must catch it
    field: str  # the canonical field it is reported on
    column: str  # the KCS column that changes
    eligible: Callable[[pd.DataFrame], pd.Series]  # rows it can happen to
    corrupt: Callable[[pd.Series], pd.Series]  # the column's new values


CORRUPTIONS = [
    Corruption(
        "HS code lost its leading zero in a spreadsheet",
        "hs6_six_digits",
        "hs6_code",
        "HS6 Code",
        lambda r: r["HS6 Code"].str.startswith("0"),
        lambda v: v.str[1:],
    ),
    Corruption(
        "HS code in reserved chapter 77", "hs_chapter_exists", "hs6_code", "HS6 Code", _any, lambda v: "77" + v.str[2:]
    ),
    Corruption(
        "negative net mass",
        "not_negative",
        "net_mass_kg",
        "Net Mass",
        lambda r: _number(r["Net Mass"]) > 0,
        lambda v: "-" + v,
    ),
    Corruption(
        "net mass of a large consignment in milligrams",
        "mass_physically_possible",
        "net_mass_kg",
        "Net Mass",
        lambda r: _number(r["Net Mass"]) > 500,
        lambda v: (_number(v) * 1e6).map(str),
    ),
    Corruption(
        "country that does not exist",
        "iso_country",
        "origin_country",
        "Country of Origin",
        _any,
        lambda v: pd.Series(np.resize(["UK", "XX", "KOR", "EU"], len(v)), index=v.index),
    ),
    Corruption("year typed 2030", "not_after_run_date", "declaration_date", "Date", _any, lambda v: "2030" + v.str[4:]),
    Corruption(
        "year typed 2002", "not_before_history_start", "declaration_date", "Date", _any, lambda v: "2002" + v.str[4:]
    ),
    Corruption(
        "date as DD/MM/YYYY",
        "iso_date",
        "declaration_date",
        "Date",
        _any,
        lambda v: v.str[8:10] + "/" + v.str[5:7] + "/" + v.str[:4],
    ),
    Corruption(
        "critical fraud without fraud",
        "critical_implies_fraud",
        "critical_fraud",
        "Fraud",
        lambda r: r["Critical Fraud"] == "2",
        lambda v: pd.Series("0", index=v.index),
    ),
    Corruption(
        "importer ID padded with a space",
        "no_surrounding_spaces",
        "importer_id",
        "Importer ID",
        _any,
        lambda v: v + " ",
    ),
    Corruption("tax rate with a percent sign", "is_a_number", "tax_rate", "Tax Rate", _any, lambda v: v + "%"),
    Corruption(
        "tax rate in basis points",
        "tax_rate_at_most_1000",
        "tax_rate",
        "Tax Rate",
        lambda r: _number(r["Tax Rate"]) > 10,
        lambda v: (_number(v) * 100).map(str),
    ),
    Corruption(
        "importer ID missing",
        "required",
        "importer_id",
        "Importer ID",
        _any,
        lambda v: pd.Series(None, index=v.index, dtype="str"),
    ),
]
EXACT_DUPLICATE = "exported twice"
CONFLICTING_DUPLICATE = "same declaration ID, another price"


def corrupt_kcs(source: pd.DataFrame, rate: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A copy of a KCS frame (values as strings) with `rate` of its rows broken per corruption,
    each row at most once, and exact and conflicting repeats appended; and the manifest."""
    rng = np.random.default_rng(seed)
    frame = source.copy()
    count = max(1, round(rate * len(frame)))
    untouched = pd.Series(True, index=frame.index)
    untouched &= frame["Country of Origin"].ne("ZZ") & frame["Country of Departure"].ne("ZZ")
    manifest = []
    for corruption in CORRUPTIONS:
        pool = frame.index[untouched & corruption.eligible(frame)]
        rows = np.sort(rng.choice(pool, size=min(count, len(pool)), replace=False))
        before = frame.loc[rows, corruption.column]
        after = corruption.corrupt(before)
        frame.loc[rows, corruption.column] = after
        untouched[rows] = False
        manifest += [
            (
                frame.at[row, "Declaration ID"],
                corruption.name,
                corruption.check,
                corruption.field,
                corruption.column,
                before[row],
                after[row],
            )
            for row in rows
        ]
    copies = []
    for name, check in ((EXACT_DUPLICATE, ""), (CONFLICTING_DUPLICATE, "conflicting_duplicate")):
        rows = np.sort(rng.choice(frame.index[untouched], size=count, replace=False))
        untouched[rows] = False
        copy = frame.loc[rows].copy()
        if check:
            copy["Item Price"] = (_number(copy["Item Price"]) + 1).map(str)
        copies.append(copy)
        manifest += [
            (
                frame.at[row, "Declaration ID"],
                name,
                check,
                "declaration_id",
                "Item Price",
                frame.at[row, "Item Price"],
                copy.at[row, "Item Price"],
            )
            for row in rows
        ]
    corrupted = pd.concat([frame, *copies], ignore_index=True)
    columns = ["declaration_id", "corruption", "check", "field", "column", "before", "after"]
    return corrupted, pd.DataFrame(manifest, columns=columns)


def write_workspace(out: Path, rate: float, seed: int) -> pd.DataFrame:
    """The project's sources corrupted into `out` (same relative paths, same params)."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    manifests = []
    for number, source in enumerate(params["ingest"]["sources"]):
        frame = pd.read_csv(REPO / source, dtype=str, keep_default_na=False, na_values=[""])
        corrupted, manifest = corrupt_kcs(frame, rate, seed + number)
        (out / source).parent.mkdir(parents=True, exist_ok=True)
        corrupted.to_csv(out / source, index=False)
        manifests.append(manifest.assign(file=source))
    (out / params["ingest"]["feedback"]).mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "params.yaml", out / "params.yaml")
    manifest = pd.concat(manifests, ignore_index=True)
    manifest.to_csv(out / "manifest.csv", index=False)
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rate", type=float, default=0.0025, help="share of rows per corruption")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--run", action="store_true", help="then run the ingest and validate stages there")
    args = parser.parse_args()
    manifest = write_workspace(args.out, args.rate, args.seed)
    print(manifest.groupby(["corruption", "check"], sort=False).size().to_string())
    if args.run:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        for stage in ("ingest", "validate"):
            done = subprocess.run([sys.executable, "-m", f"pipelines.{stage}"], cwd=args.out, env=env)
            if done.returncode:
                sys.exit(done.returncode)
        report = json.loads((args.out / "metrics/validation.json").read_text())
        print(json.dumps({k: v for k, v in report.items() if k != "failed_checks"}, indent=2))


if __name__ == "__main__":
    main()
