"""Synthetic canonical declarations at any scale, so speed and memory can be measured beyond the
46k rows of the KCS history.

Realistic in what costs time and memory: tens of thousands of importers, thousands of HS codes,
Zipf-skewed activity, time order. Realistic in what a model must learn: fraud is planted on
risky importers and declarants, on risky HS code x origin pairs, and shows as undervaluation
against the HS code's usual value per kg. Every column is drawn with vectorised numpy and built
with pyarrow, so 10M rows take about a minute and a few GB; the same seed gives the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.schema import DECLARATION_FIELDS, LABEL_FIELDS

START_DATE = "2020-01-01"
DAYS = 730
# Trade partners, busiest first (drawn with Zipf weights in this order).
COUNTRIES = (
    "CN JP US DE VN HK KR TW IT FR GB TH IN ID MY SG AU NL CA ES BE CH MX BR PH TR PL SE AT DK "
    "IE CZ NZ FI NO PT HU IL ZA CL AR RU PK BD LK AE SA EG MA KH MM CO PE UA RO GR SK SI LT EE"
).split()
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
        # KCS: 37k rows, 12.7k importers, 1.2k declarants, 2.4k HS codes; a national service's
        # year: tens of thousands of importers, about five thousand HS codes in use.
        importers = int(np.clip(rows // 10, 100, 60_000))
        return cls(
            importers=importers,
            declarants=max(20, importers // 12),
            sellers=int(np.clip(rows // 8, 100, 80_000)),
            couriers=80,
            offices=42,
            hs_codes=int(np.clip(rows // 20, 50, 5_000)),
        )


def _zipf_weights(count: int, exponent: float) -> np.ndarray:
    weights = 1.0 / np.arange(1, count + 1) ** exponent
    return weights / weights.sum()


def _draw(rng: np.random.Generator, count: int, size: int, exponent: float) -> np.ndarray:
    """Indices in [0, count), index 0 the most frequent."""
    return rng.choice(count, size=size, p=_zipf_weights(count, exponent)).astype(np.int64)


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


def _small_field(rng: np.random.Generator, shares: dict[str, float], size: int) -> pd.Series:
    values = list(shares)
    p = np.array([shares[v] for v in values])
    return _strings(values, rng.choice(len(values), size=size, p=p / p.sum()))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def synthesize(rows: int, seed: int, start_date: str = START_DATE, days: int = DAYS) -> pd.DataFrame:
    """`rows` labelled canonical declarations (CONTRACT.md section 1) in date order, typed like
    the validate stage's output."""
    if rows < 1:
        raise ValueError(f"rows must be at least 1, got {rows}")
    rng = np.random.default_rng(seed)
    card = Cardinalities.for_rows(rows)
    countries = len(COUNTRIES)

    # Entities and what is fixed about them.
    hs_codes = pa.array([f"{c:06d}" for c in np.sort(rng.choice(970_000, card.hs_codes, replace=False) + 10_000)])
    hs_rank = rng.permutation(card.hs_codes)  # popularity is not alphabetical
    hs_log_value_per_kg = rng.normal(np.log(5_000), 1.5, card.hs_codes)
    hs_log_mass = rng.normal(np.log(200), 1.5, card.hs_codes)
    hs_tax_rate = rng.choice(TAX_RATES, card.hs_codes)
    hs_tax_type = rng.choice(len(TAX_TYPES), card.hs_codes, p=_zipf_weights(len(TAX_TYPES), 1.2))
    importer_hs = hs_rank[_draw(rng, card.hs_codes, card.importers, 1.05)]
    importer_origin = _draw(rng, countries, card.importers, 1.2)
    importer_declarant = _draw(rng, card.declarants, card.importers, 1.0)
    importer_office = _draw(rng, card.offices, card.importers, 1.1)
    risky_importer = rng.random(card.importers) < RISKY_IMPORTER_SHARE
    risky_declarant = rng.random(card.declarants) < RISKY_DECLARANT_SHARE

    # Rows: who declares what, from where, when.
    day = np.sort(rng.integers(0, days, rows))
    importer = _draw(rng, card.importers, rows, 0.8)
    own = rng.random((4, rows))
    hs = np.where(own[0] < 0.7, importer_hs[importer], hs_rank[_draw(rng, card.hs_codes, rows, 1.05)])
    origin = np.where(own[1] < 0.75, importer_origin[importer], _draw(rng, countries, rows, 1.2))
    departure = np.where(rng.random(rows) < 0.85, origin, _draw(rng, countries, rows, 1.2))
    declarant = np.where(own[2] < 0.85, importer_declarant[importer], _draw(rng, card.declarants, rows, 1.0))
    office = np.where(own[3] < 0.7, importer_office[importer], _draw(rng, card.offices, rows, 1.1))
    seller = _draw(rng, card.sellers, rows, 0.9)
    courier = _draw(rng, card.couriers, rows, 1.3)

    # Planted fraud, then the undervaluation it shows as.
    risky_pair = ((hs.astype(np.uint64) * np.uint64(2_654_435_761) + origin.astype(np.uint64) * np.uint64(40_503))
                  % np.uint64(1_000)) < np.uint64(RISKY_PAIR_SHARE * 1_000)
    log_odds = (
        BASE_LOG_ODDS
        + RISKY_IMPORTER_LOG_ODDS * risky_importer[importer]
        + RISKY_DECLARANT_LOG_ODDS * risky_declarant[declarant]
        + RISKY_PAIR_LOG_ODDS * risky_pair
        + rng.normal(0, 0.5, rows)
    )
    fraud = rng.random(rows) < _sigmoid(log_odds)
    undervalued = rng.random(rows) < np.where(fraud, UNDERVALUED_SHARE_FRAUD, UNDERVALUED_SHARE_CLEAN)
    discount = np.where(undervalued, 0.5 + rng.exponential(1.0, rows), 0.0)
    critical = fraud & (rng.random(rows) < _sigmoid(-3.5 + 2.0 * risky_pair + 1.0 * (discount > 1.5)))
    log_value_per_kg = hs_log_value_per_kg[hs] + rng.normal(0, 0.4, rows) - discount
    net_mass = np.round(np.exp(hs_log_mass[hs] + rng.normal(0, 1.0, rows)), 1)
    item_price = np.round(net_mass * np.exp(log_value_per_kg), 1)

    country_codes = pa.array(COUNTRIES)
    first_id = 10**9 + int(rng.integers(0, 10**9))
    columns = {
        "declaration_id": pd.Series(pd.array(pc.cast(pa.array(np.arange(first_id, first_id + rows)), pa.string()),
                                             dtype=pd.StringDtype("pyarrow", na_value=np.nan))),
        "declaration_date": pd.Series(np.datetime64(start_date, "D") + day, dtype="datetime64[ns]"),
        "office_id": _strings([f"{10 + 2 * i}" for i in range(card.offices)], office),
        "declarant_id": _strings(_entity_ids(rng, card.declarants, 7), declarant),
        "importer_id": _strings(_entity_ids(rng, card.importers, 7), importer),
        "seller_id": _strings(_entity_ids(rng, card.sellers, 7), seller, missing=rng.random(rows) < 0.1),
        "courier_id": _strings(_entity_ids(rng, card.couriers, 6), courier, missing=rng.random(rows) < 0.8),
        "hs6_code": _strings(hs_codes, hs),
        "departure_country": _strings(country_codes, departure),
        "origin_country": _strings(country_codes, origin),
        "tax_rate": hs_tax_rate[hs],
        "tax_type": _strings(TAX_TYPES, hs_tax_type[hs]),
        "net_mass_kg": net_mass,
        "item_price": item_price,
        "fraud": fraud.astype("int8"),
        "critical_fraud": critical.astype("int8"),
    }
    for field, shares in SMALL_FIELDS.items():
        columns[field] = _small_field(rng, shares, rows)
    return pd.DataFrame(columns)[DECLARATION_FIELDS + LABEL_FIELDS]


def write_declarations(records: pd.DataFrame, path: Path) -> None:
    """Parquet keeps the types; CSV writes ISO dates, as a client's export would."""
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        records.to_parquet(path, index=False)
    elif suffix == ".csv":
        records.to_csv(path, index=False, date_format="%Y-%m-%d")
    else:
        raise ValueError(f"{path}: expected a .csv or .parquet file")
