"""Synthetic canonical declarations at national scale, so speed and memory can be measured beyond
the 46k rows of the KCS history.

Realistic in what costs time and memory: entity counts that keep growing with the history (a
few hundred thousand importers and tens of thousands of declarants and sellers at 25M rows, the
HS codes in use approaching the ~5,600 subheadings the nomenclature has), Zipf-skewed activity,
time order over two years. Realistic in what a model must learn: fraud is planted on risky
importers and declarants, on risky HS code x origin pairs, and shows as undervaluation against
the HS code's usual value per kg.

Rows are drawn and written block by block (a Parquet part file each, in date order across
parts), so memory stays that of one block and the entity tables whatever the row count. Every
column is vectorised numpy built with pyarrow. The same seed, row count and block size give the
same rows.

    python -m bench.synthesize --rows 25000000 --seed 7 --output synthetic.parquet [--ingested-as NAME]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from features.schema import HS_CHAPTERS, INSPECTED_ON, LABELLED_FIELDS, RECOVERED_DUTY
from pipelines.common import part_path, staged_output
from pipelines.ingest import SCHEMA as INGESTED

START_DATE = "2020-01-01"
DAYS = 730
BLOCK_ROWS = 1_000_000  # rows per part file: a block's columns take a few hundred MB
# HS subheadings a national history ends up declaring: the nomenclature has about 5,600 and a
# few are never traded, so this ceiling is real where the other entity counts have none.
HS_CODES_IN_USE = 5_300
# Trade partners, busiest first (drawn with Zipf weights in this order).
COUNTRIES = [
    "CN",
    "JP",
    "US",
    "DE",
    "VN",
    "HK",
    "KR",
    "TW",
    "IT",
    "FR",
    "GB",
    "TH",
    "IN",
    "ID",
    "MY",
    "SG",
    "AU",
    "NL",
    "CA",
    "ES",
    "BE",
    "CH",
    "MX",
    "BR",
    "PH",
    "TR",
    "PL",
    "SE",
    "AT",
    "DK",
    "IE",
    "CZ",
    "NZ",
    "FI",
    "NO",
    "PT",
    "HU",
    "IL",
    "ZA",
    "CL",
    "AR",
    "RU",
    "PK",
    "BD",
    "LK",
    "AE",
    "SA",
    "EG",
    "MA",
    "KH",
    "MM",
    "CO",
    "PE",
    "UA",
    "RO",
    "GR",
    "SK",
    "SI",
    "LT",
    "EE",
]
# Small categorical fields: values and their shares, close to the KCS history's.
SMALL_FIELDS = {
    "process_type": ({"B": 0.998, "D": 0.0015, "A": 0.0005}),
    "import_type": ({"11": 0.86, "87": 0.04, "94": 0.03, "15": 0.02, "89": 0.015, "29": 0.01, "21": 0.025}),
    "import_use": ({"21": 0.91, "11": 0.045, "26": 0.02, "23": 0.01, "28": 0.01, "13": 0.005}),
    "payment_type": ({"11": 0.67, "43": 0.19, "18": 0.07, "14": 0.06, "13": 0.01}),
    "transport_mode": ({"10": 0.57, "40": 0.41, "50": 0.015, "30": 0.004, "90": 0.001}),
    "origin_indicator": ({"E": 0.28, "G": 0.23, "Y": 0.22, "B": 0.15, "S": 0.12}),
}
TAX_TYPES = ["A", "C", "FCN1", "FEU1", "CIT", "FUS1", "FAS1", "E"]
TAX_RATES = np.array([0.0, 0.0, 3.0, 5.0, 6.5, 8.0, 8.0, 13.0, 20.0, 30.0])
ID_ALPHABET = np.array(list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"))

# Planted fraud: log-odds added by each pattern, and how often the pattern is present.
BASE_LOG_ODDS = -1.7
RISKY_IMPORTER_SHARE, RISKY_IMPORTER_LOG_ODDS = 0.04, 3.0
RISKY_DECLARANT_SHARE, RISKY_DECLARANT_LOG_ODDS = 0.05, 1.0
RISKY_PAIR_SHARE, RISKY_PAIR_LOG_ODDS = 0.03, 2.5
UNDERVALUED_SHARE_FRAUD, UNDERVALUED_SHARE_CLEAN = 0.6, 0.03  # rows declared below the HS norm


def _heaps(rows: int, per_row: float, knee: int, exponent: float) -> int:
    """Distinct entities in `rows` declarations: one new entity every 1/per_row rows up to
    `knee` rows, then Heaps' law (sublinear growth, never a plateau)."""
    if rows <= knee:
        return max(100, int(rows * per_row))
    return int(knee * per_row * (rows / knee) ** exponent)


@dataclass(frozen=True)
class Cardinalities:
    """How many distinct entities a history of this many rows holds."""

    importers: int
    declarants: int
    sellers: int
    couriers: int
    offices: int
    hs_codes: int

    @classmethod
    def for_rows(cls, rows: int) -> Cardinalities:
        # KCS: 37k rows, 12.7k importers, 1.2k declarants, 2.4k HS codes. A national history of
        # 25M declarations: ~360k importers, ~30k declarants, ~85k foreign sellers, ~5,300 HS
        # codes. Offices and express couriers are set by the administration, not the traffic.
        importers = _heaps(rows, 1 / 10, 200_000, 0.6)
        return cls(
            importers=importers,
            declarants=max(20, importers // 12),
            sellers=_heaps(rows, 1 / 8, 100_000, 0.35),
            couriers=80,
            offices=42,
            hs_codes=max(50, round(HS_CODES_IN_USE * -np.expm1(-rows / (20 * HS_CODES_IN_USE)))),
        )


class _Zipf:
    """Indices in [0, count), index 0 the most frequent; the CDF is built once for all blocks."""

    def __init__(self, count: int, exponent: float):
        weights = 1.0 / np.arange(1, count + 1) ** exponent
        self.cdf = np.cumsum(weights / weights.sum())
        self.count = count

    def draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return np.minimum(np.searchsorted(self.cdf, rng.random(size), side="right"), self.count - 1)


def _entity_ids(rng: np.random.Generator, count: int, length: int) -> pa.Array:
    """Distinct random alphanumeric IDs like the KCS ones ("QLRUBN9")."""
    ids: set[str] = set()
    while len(ids) < count:
        letters = ID_ALPHABET[rng.integers(0, len(ID_ALPHABET), size=(count, length))]
        ids.update("".join(row) for row in letters)
    return pa.array(rng.permutation(sorted(ids)[:count]))  # sorted: set order is not seeded


def _strings(vocabulary: pa.Array | list[str], codes: np.ndarray, missing: np.ndarray | None = None) -> pd.Series:
    """A string column built by pyarrow from a vocabulary and per-row codes (no Python objects)."""
    vocabulary = vocabulary if isinstance(vocabulary, pa.Array) else pa.array(vocabulary)
    taken = vocabulary.take(pa.array(codes, mask=missing))
    return pd.Series(pd.array(taken, dtype=pd.StringDtype("pyarrow", na_value=np.nan)))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


class _Entities:
    """What is fixed about each HS code, importer, declarant and partner: drawn once, shared by
    every block."""

    def __init__(self, rng: np.random.Generator, card: Cardinalities):
        countries = len(COUNTRIES)
        self.hs_zipf = _Zipf(card.hs_codes, 1.05)
        self.country_zipf = _Zipf(countries, 1.2)
        self.importer_zipf = _Zipf(card.importers, 0.8)
        self.declarant_zipf = _Zipf(card.declarants, 1.0)
        self.office_zipf = _Zipf(card.offices, 1.1)
        self.seller_zipf = _Zipf(card.sellers, 0.9)
        self.courier_zipf = _Zipf(card.couriers, 1.3)
        self.small_fields = {
            field: (list(shares), np.array(list(shares.values())) / sum(shares.values()))
            for field, shares in SMALL_FIELDS.items()
        }

        chapters = np.array(sorted(int(chapter) for chapter in HS_CHAPTERS))
        drawn = np.sort(rng.choice(len(chapters) * 10_000, card.hs_codes, replace=False))
        self.hs_codes = pa.array([f"{c:06d}" for c in chapters[drawn // 10_000] * 10_000 + drawn % 10_000])
        self.hs_rank = rng.permutation(card.hs_codes)  # popularity is not alphabetical
        self.hs_log_value_per_kg = rng.normal(np.log(5_000), 1.5, card.hs_codes)
        self.hs_log_mass = rng.normal(np.log(200), 1.5, card.hs_codes)
        self.hs_tax_rate = rng.choice(TAX_RATES, card.hs_codes)
        self.hs_tax_type = _Zipf(len(TAX_TYPES), 1.2).draw(rng, card.hs_codes)
        self.importer_hs = self.hs_rank[self.hs_zipf.draw(rng, card.importers)]
        self.importer_origin = self.country_zipf.draw(rng, card.importers)
        self.importer_declarant = self.declarant_zipf.draw(rng, card.importers)
        self.importer_office = self.office_zipf.draw(rng, card.importers)
        self.risky_importer = rng.random(card.importers) < RISKY_IMPORTER_SHARE
        self.risky_declarant = rng.random(card.declarants) < RISKY_DECLARANT_SHARE

        self.offices = pa.array([f"{10 + 2 * i}" for i in range(card.offices)])
        self.declarant_ids = _entity_ids(rng, card.declarants, 7)
        self.importer_ids = _entity_ids(rng, card.importers, 7)
        self.seller_ids = _entity_ids(rng, card.sellers, 7)
        self.courier_ids = _entity_ids(rng, card.couriers, 6)
        self.countries = pa.array(COUNTRIES)
        self.first_id = 10**9 + int(rng.integers(0, 10**9))


def _block(e: _Entities, rng: np.random.Generator, first_row: int, day: np.ndarray, start_date: str) -> pd.DataFrame:
    """The declarations numbered first_row onwards, one per entry of `day`."""
    rows = len(day)
    # Who declares what, from where.
    importer = e.importer_zipf.draw(rng, rows)
    own = rng.random((4, rows))
    hs = np.where(own[0] < 0.7, e.importer_hs[importer], e.hs_rank[e.hs_zipf.draw(rng, rows)])
    origin = np.where(own[1] < 0.75, e.importer_origin[importer], e.country_zipf.draw(rng, rows))
    departure = np.where(rng.random(rows) < 0.85, origin, e.country_zipf.draw(rng, rows))
    declarant = np.where(own[2] < 0.85, e.importer_declarant[importer], e.declarant_zipf.draw(rng, rows))
    office = np.where(own[3] < 0.7, e.importer_office[importer], e.office_zipf.draw(rng, rows))
    seller = e.seller_zipf.draw(rng, rows)
    courier = e.courier_zipf.draw(rng, rows)

    # Planted fraud, then the undervaluation it shows as.
    risky_pair = (
        (hs.astype(np.uint64) * np.uint64(2_654_435_761) + origin.astype(np.uint64) * np.uint64(40_503))
        % np.uint64(1_000)
    ) < np.uint64(RISKY_PAIR_SHARE * 1_000)
    log_odds = (
        BASE_LOG_ODDS
        + RISKY_IMPORTER_LOG_ODDS * e.risky_importer[importer]
        + RISKY_DECLARANT_LOG_ODDS * e.risky_declarant[declarant]
        + RISKY_PAIR_LOG_ODDS * risky_pair
        + rng.normal(0, 0.5, rows)
    )
    fraud = rng.random(rows) < _sigmoid(log_odds)
    undervalued = rng.random(rows) < np.where(fraud, UNDERVALUED_SHARE_FRAUD, UNDERVALUED_SHARE_CLEAN)
    discount = np.where(undervalued, 0.5 + rng.exponential(1.0, rows), 0.0)
    critical = fraud & (rng.random(rows) < _sigmoid(-3.5 + 2.0 * risky_pair + 1.0 * (discount > 1.5)))
    log_value_per_kg = e.hs_log_value_per_kg[hs] + rng.normal(0, 0.4, rows) - discount
    net_mass = np.round(np.exp(e.hs_log_mass[hs] + rng.normal(0, 1.0, rows)), 1)
    item_price = np.round(net_mass * np.exp(log_value_per_kg), 1)

    first_id = e.first_id + first_row
    columns = {
        "declaration_id": pd.Series(
            pd.array(
                pc.cast(pa.array(np.arange(first_id, first_id + rows)), pa.string()),
                dtype=pd.StringDtype("pyarrow", na_value=np.nan),
            )
        ),
        "declaration_date": pd.Series(np.datetime64(start_date, "D") + day, dtype="datetime64[ns]"),
        "office_id": _strings(e.offices, office),
        "declarant_id": _strings(e.declarant_ids, declarant),
        "importer_id": _strings(e.importer_ids, importer),
        "seller_id": _strings(e.seller_ids, seller, missing=rng.random(rows) < 0.1),
        "courier_id": _strings(e.courier_ids, courier, missing=rng.random(rows) < 0.8),
        "hs6_code": _strings(e.hs_codes, hs),
        "departure_country": _strings(e.countries, departure),
        "origin_country": _strings(e.countries, origin),
        "tax_rate": e.hs_tax_rate[hs],
        "tax_type": _strings(TAX_TYPES, e.hs_tax_type[hs]),
        "net_mass_kg": net_mass,
        "item_price": item_price,
        "fraud": pd.array(fraud, dtype="Int8"),  # nullable, as history's labels are (all inspected here)
        "critical_fraud": pd.array(critical, dtype="Int8"),
    }
    for field, (values, shares) in e.small_fields.items():
        columns[field] = _strings(values, rng.choice(len(values), size=rows, p=shares))
    for field in ("container_number", "bill_of_lading"):  # not declared, as in the KCS history
        columns[field] = pd.Series([None] * rows, dtype="str")
    # the duty an inspection assessed, reported for half the declarations: an undervalued fraud's
    # is the duty on what the discount hid; another fraud's a small share of its duty; clean: 0
    duty = item_price * e.hs_tax_rate[hs] / 100
    assessed = np.where(fraud, duty * np.where(undervalued, np.expm1(discount), 0.05), 0.0)
    columns[RECOVERED_DUTY] = np.where(rng.random(rows) < 0.5, np.round(assessed, 2), np.nan)
    columns[INSPECTED_ON] = pd.Series(pd.NaT, index=range(rows), dtype="datetime64[ns]")  # not given, as in KCS
    return pd.DataFrame(columns)[LABELLED_FIELDS]


def blocks(
    rows: int, seed: int, block_rows: int = BLOCK_ROWS, start_date: str = START_DATE, days: int = DAYS
) -> Iterator[pd.DataFrame]:
    """`rows` labelled canonical declarations (docs/record.md), typed like the validate
    stage's output, in blocks of `block_rows` in date order (within and across blocks)."""
    if rows < 1 or block_rows < 1:
        raise ValueError(f"rows and block_rows must be at least 1, got {rows} and {block_rows}")
    count = -(-rows // block_rows)
    entity_seed, day_seed, *block_seeds = np.random.SeedSequence(seed).spawn(2 + count)
    entities = _Entities(np.random.default_rng(entity_seed), Cardinalities.for_rows(rows))
    # Rows per day for the whole history first, so each block knows its days without the others.
    last_row_of_day = np.cumsum(np.random.default_rng(day_seed).multinomial(rows, np.full(days, 1 / days)))
    for index, block_seed in enumerate(block_seeds):
        first = index * block_rows
        numbers = np.arange(first, min(first + block_rows, rows))
        day = np.searchsorted(last_row_of_day, numbers, side="right")
        yield _block(entities, np.random.default_rng(block_seed), first, day, start_date)


def as_ingested(block: pd.DataFrame, source: str, first_row: int) -> pa.Table:
    """The block as the ingest stage writes a source file's rows (every field the text a client's
    export holds, and where each row came from), so the validate stage parses it as real input."""
    table = pa.Table.from_pandas(block, preserve_index=False)
    text = [
        pc.cast(pc.cast(column, pa.date32()) if pa.types.is_timestamp(column.type) else column, pa.large_string())
        for column in table.columns
    ]
    provenance = [
        pa.array([source] * len(block), pa.large_string()),
        pa.array(np.arange(first_row + 1, first_row + 1 + len(block)), pa.int64()),
    ]
    return pa.Table.from_arrays(text + provenance, schema=INGESTED)


def write_parts(rows: int, seed: int, output: Path, block_rows: int = BLOCK_ROWS, source: str | None = None) -> int:
    """`output` becomes a directory of Parquet parts (pipelines.common.part_path), replaced only
    once every part is written; with `source`, in the ingest stage's layout (as_ingested).
    Returns the number of parts."""
    with staged_output(output) as staging:
        staging.mkdir(parents=True)
        for index, block in enumerate(blocks(rows, seed, block_rows)):
            if source is None:
                block.to_parquet(part_path(staging, index), index=False)
            else:
                pq.write_table(as_ingested(block, source, index * block_rows), part_path(staging, index))
    return index + 1


def _replaceable(path: Path) -> bool:
    """Only a directory of part files is overwritten: never a file or a folder of other things."""
    return not path.exists() or (path.is_dir() and all(p.name.startswith("part-") for p in path.iterdir()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, required=True, help="how many declarations")
    parser.add_argument("--seed", type=int, default=0, help="the same seed writes the same rows")
    parser.add_argument("--output", type=Path, required=True, help="a directory of Parquet part files")
    parser.add_argument("--block-rows", type=int, default=BLOCK_ROWS, help="rows per part file")
    parser.add_argument(
        "--ingested-as",
        metavar="SOURCE",
        default=None,
        help="write what the ingest stage writes (text fields, source_file SOURCE, source_row): "
        "a stand-in for data/interim/declarations.parquet",
    )
    args = parser.parse_args(argv)
    if args.rows < 1 or args.block_rows < 1:
        parser.error("--rows and --block-rows must be at least 1")
    if not _replaceable(args.output):
        parser.error(f"{args.output} exists and is not a directory of part files: not overwriting it")
    started = time.perf_counter()
    parts = write_parts(args.rows, args.seed, args.output, args.block_rows, args.ingested_as)
    print(
        f"wrote {args.rows:,} synthetic declarations (seed {args.seed}) in {parts} part(s) to {args.output} "
        f"in {time.perf_counter() - started:.1f} s",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
