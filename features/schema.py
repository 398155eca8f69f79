"""The canonical declaration record (CONTRACT.md section 1) and its validation.

One schema serves the validate stage (bad rows go to quarantine) and the scoring service
(a bad record rejects the whole request), so a record the service accepts is exactly a record
the pipeline would have trained on.
"""

from __future__ import annotations

import re

import pandas as pd
import pandera.pandas as pa
import pycountry
from pandera.errors import SchemaErrors
from pandera.typing import Series

ISO_COUNTRIES = sorted(country.alpha_2 for country in pycountry.countries)

DECLARATION_FIELDS = [
    "declaration_id",
    "declaration_date",
    "office_id",
    "process_type",
    "import_type",
    "import_use",
    "payment_type",
    "transport_mode",
    "declarant_id",
    "importer_id",
    "seller_id",
    "courier_id",
    "hs6_code",
    "departure_country",
    "origin_country",
    "tax_rate",
    "tax_type",
    "origin_indicator",
    "net_mass_kg",
    "item_price",
]
LABEL_FIELDS = ["fraud", "critical_fraud"]
OPTIONAL_FIELDS = {"seller_id", "courier_id"}
NUMERIC_FIELDS = ["tax_rate", "net_mass_kg", "item_price"]
STRING_FIELDS = [
    f for f in DECLARATION_FIELDS if f not in NUMERIC_FIELDS and f != "declaration_date"
]


class DeclarationSchema(pa.DataFrameModel):
    """A declaration as sent for scoring: no labels."""

    declaration_id: Series[str] = pa.Field(str_length={"min_value": 1, "max_value": 64})
    declaration_date: Series[pa.DateTime] = pa.Field()
    office_id: Series[str] = pa.Field(str_length={"min_value": 1})
    process_type: Series[str] = pa.Field(str_length={"min_value": 1})
    import_type: Series[str] = pa.Field(str_length={"min_value": 1})
    import_use: Series[str] = pa.Field(str_length={"min_value": 1})
    payment_type: Series[str] = pa.Field(str_length={"min_value": 1})
    transport_mode: Series[str] = pa.Field(str_length={"min_value": 1})
    declarant_id: Series[str] = pa.Field(str_length={"min_value": 1})
    importer_id: Series[str] = pa.Field(str_length={"min_value": 1})
    seller_id: Series[str] = pa.Field(nullable=True)
    courier_id: Series[str] = pa.Field(nullable=True)
    hs6_code: Series[str] = pa.Field(str_matches=r"^\d{6}$")
    departure_country: Series[str] = pa.Field()
    origin_country: Series[str] = pa.Field()
    tax_rate: Series[float] = pa.Field(ge=0, le=1000)
    tax_type: Series[str] = pa.Field(str_length={"min_value": 1})
    origin_indicator: Series[str] = pa.Field(str_length={"min_value": 1})
    net_mass_kg: Series[float] = pa.Field(ge=0)
    item_price: Series[float] = pa.Field(ge=0)

    @pa.check("departure_country", "origin_country", name="iso_country")
    def _iso_country(cls, series: Series[str]) -> Series[bool]:
        return series.isin(ISO_COUNTRIES)

    @pa.check("tax_rate", "net_mass_kg", "item_price", name="finite")
    def _finite(cls, series: Series[float]) -> Series[bool]:
        return series.abs() != float("inf")

    class Config:
        coerce = True
        strict = True
        ordered = False


class LabelledDeclarationSchema(DeclarationSchema):
    """A declaration from history, with the inspection result."""

    fraud: Series[float] = pa.Field(isin=[0, 1])
    critical_fraud: Series[float] = pa.Field(isin=[0, 1])

    @pa.dataframe_check(name="critical_implies_fraud")
    def _critical_implies_fraud(cls, df: pd.DataFrame) -> Series[bool]:
        return (df["critical_fraud"] == 0) | (df["fraud"] == 1)


_MESSAGES = [
    (r"^not_nullable$", "is required"),
    (r"^str_matches", "must be exactly 6 digits"),
    (r"^isin\(\[0, 1\]\)", "must be 0 or 1"),
    (r"^iso_country$", "must be an ISO 3166-1 alpha-2 country code"),
    (r"^greater_than_or_equal_to\((.*)\)", "must be >= {0}"),
    (r"^less_than_or_equal_to\((.*)\)", "must be <= {0}"),
    (r"^str_length", "must be a non-empty string (at most 64 characters for an ID)"),
    (r"^not_a_number$", "must be a number"),
    (r"^not_a_date$", "must be a date YYYY-MM-DD"),
    (r"^finite$", "must be a finite number"),
    (r"^critical_implies_fraud$", "critical_fraud = 1 requires fraud = 1"),
    (r"^column_in_dataframe$", "is required"),
]


def _message(check: str) -> str:
    for pattern, text in _MESSAGES:
        match = re.match(pattern, check)
        if match:
            return text.format(*match.groups())
    return f"failed check {check}"


def _typed(records: pd.DataFrame) -> tuple[pd.DataFrame, list[tuple[int, str, str, str]]]:
    """Parse strings, numbers and dates field by field, so that one unparseable value fails
    its own row and field instead of leaving the whole column untyped."""
    typed = records.copy()
    for field in sorted(OPTIONAL_FIELDS - set(typed.columns)):
        typed[field] = None
    failures = []
    for field in typed.columns:
        values = typed[field]
        present = values.notna()
        if field in NUMERIC_FIELDS or field in LABEL_FIELDS:
            parsed = pd.to_numeric(values, errors="coerce").astype("float64")
            check = "not_a_number"
        elif field == "declaration_date":
            parsed = pd.to_datetime(values, format="%Y-%m-%d", errors="coerce")
            check = "not_a_date"
        else:
            parsed = values.map(str, na_action="ignore").astype("str")
            parsed = parsed.where(present, None)
            check = None
        if check:
            broken = present & parsed.isna()
            failures.extend((int(i), field, check, _message(check)) for i in broken[broken].index)
        typed[field] = parsed
    return typed, failures


def find_failures(records: pd.DataFrame, labelled: bool) -> pd.DataFrame:
    """Every failed check as one row: the record's position, the field, the check and a message.

    Column-level problems (a missing or extra field) are reported against every row, because
    each row then lacks or carries that field.
    """
    schema = (LabelledDeclarationSchema if labelled else DeclarationSchema).to_schema()
    typed, rows = _typed(records.reset_index(drop=True))
    unparsed = {(i, field) for i, field, _, _ in rows}
    try:
        schema.validate(typed, lazy=True)
    except SchemaErrors as err:
        cases = err.failure_cases
    else:
        cases = pd.DataFrame(columns=["check", "index", "failure_case", "column"])
    for case in cases.itertuples(index=False):
        check = str(case.check)
        if case.index is None or pd.isna(case.index):
            if check == "column_in_schema":
                field, message = str(case.failure_case), "is not a declaration field"
            elif check == "column_in_dataframe":
                field, message = str(case.failure_case), "is required"
            else:
                field, message = str(case.column), _message(check)
            rows.extend((i, field, check, message) for i in range(len(typed)))
        else:
            index = int(case.index)
            field = "critical_fraud" if check == "critical_implies_fraud" else str(case.column)
            if (index, field) not in unparsed:
                rows.append((index, field, check, _message(check)))
    failures = pd.DataFrame(rows, columns=["index", "field", "check", "message"])
    return failures.drop_duplicates().sort_values(["index", "field"], kind="stable")


def coerce_declarations(records: pd.DataFrame, labelled: bool) -> pd.DataFrame:
    """Valid records in their canonical dtypes (strings, datetime64 dates, float numbers)."""
    schema = (LabelledDeclarationSchema if labelled else DeclarationSchema).to_schema()
    typed = schema.validate(_typed(records)[0])
    columns = DECLARATION_FIELDS + (LABEL_FIELDS if labelled else [])
    typed = typed[columns].copy()
    typed["declaration_date"] = typed["declaration_date"].astype("datetime64[ns]")
    if labelled:
        typed[LABEL_FIELDS] = typed[LABEL_FIELDS].astype("int8")
    return typed
