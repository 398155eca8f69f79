"""Source layouts mapped onto the canonical record.

A customs administration's export is one `SourceLayout`: which column holds which canonical
field and how its labels read. Adding an administration is adding a layout, not changing a stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pandas as pd

from features.schema import DECLARATION_FIELDS, LABEL_FIELDS


@dataclass(frozen=True)
class SourceLayout:
    name: str
    columns: dict[str, str]  # source column -> canonical field
    labels: Callable[[pd.DataFrame], pd.DataFrame]  # source frame -> fraud, critical_fraud

    def to_canonical(self, source: pd.DataFrame) -> pd.DataFrame:
        """Rename and keep values as read (strings): typing them is validation's job, so a bad
        value is quarantined with its reason rather than lost in a parse error here."""
        missing = [column for column in self.columns if column not in source.columns]
        if missing:
            raise ValueError(f"{self.name} layout: missing columns {missing}")
        records = source[list(self.columns)].rename(columns=self.columns)
        labels = self.labels(source)
        return pd.concat([records, labels], axis=1)[DECLARATION_FIELDS + LABEL_FIELDS]


def _kcs_labels(source: pd.DataFrame) -> pd.DataFrame:
    # KCS "Critical Fraud" is 0 clean, 1 fraud, 2 critical fraud: only 2 is critical.
    critical = source["Critical Fraud"].str.strip()
    return pd.DataFrame(
        {
            "fraud": source["Fraud"],
            "critical_fraud": critical.where(critical.isna(), (critical == "2").map(int).astype(str)),
        },
        index=source.index,
    )


KCS = SourceLayout(
    name="kcs",
    columns={
        "Declaration ID": "declaration_id",
        "Date": "declaration_date",
        "Office ID": "office_id",
        "Process Type": "process_type",
        "Import Type": "import_type",
        "Import Use": "import_use",
        "Payment Type": "payment_type",
        "Mode of Transport": "transport_mode",
        "Declarant ID": "declarant_id",
        "Importer ID": "importer_id",
        "Seller ID": "seller_id",
        "Courier ID": "courier_id",
        "HS6 Code": "hs6_code",
        "Country of Departure": "departure_country",
        "Country of Origin": "origin_country",
        "Tax Rate": "tax_rate",
        "Tax Type": "tax_type",
        "Country of Origin Indicator": "origin_indicator",
        "Net Mass": "net_mass_kg",
        "Item Price": "item_price",
    },
    labels=_kcs_labels,
)

LAYOUTS = {layout.name: layout for layout in [KCS]}


def read_source(path: str, layout: SourceLayout) -> pd.DataFrame:
    """Read a source CSV with every value as a string, so leading zeros survive."""
    source = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    return layout.to_canonical(source)
