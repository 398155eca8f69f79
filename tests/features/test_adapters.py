"""The KCS source layout: columns mapped onto the canonical record, values kept as read."""

from __future__ import annotations

import pandas as pd
import pytest

from features.adapters import (
    FEEDBACK_FIELDS,
    KCS,
    LAYOUTS,
    merge_feedback,
    read_feedback,
    read_source,
    read_source_chunks,
    with_source,
)
from features.record import DECLARATION_FIELDS, INSPECTED_ON, LABEL_FIELDS, LABELLED_FIELDS, SELECTED_BY

KCS_COLUMNS = {
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
}


def _source(rows: int = 4) -> pd.DataFrame:
    """A KCS export as read with dtype=str; row i has distinct values, critical fraud 0/1/2/2."""
    data = {column: [f"{column[:3]}-{i}" for i in range(rows)] for column in KCS_COLUMNS}
    data["Declaration ID"] = [f"0000{i}" for i in range(rows)]
    data["Date"] = [f"2021-01-0{i + 1}" for i in range(rows)]
    data["Office ID"] = ["030", "040", "001", "120"][:rows]
    data["HS6 Code"] = ["010121", "440890", "000001", "690722"][:rows]
    data["Tax Rate"] = ["0.0", "8.0", "08", "1000"][:rows]
    data["Net Mass"] = ["108.0", "0", "1e3", "7"][:rows]
    data["Item Price"] = ["372254.40", "5353.02", "0.10", "1"][:rows]
    data["Fraud"] = ["0", "1", "1", "1"][:rows]
    data["Critical Fraud"] = ["0", "1", "2", "2"][:rows]
    data["Some New KCS Column"] = ["x"] * rows
    return pd.DataFrame(data, dtype="str")


# The KCS export has no such columns; every KCS row was inspected, on a day it does not give.
NOT_IN_KCS = ["container_number", "bill_of_lading", INSPECTED_ON, "additional_duty"]


def test_kcs_layout_is_registered():
    assert LAYOUTS["kcs"] is KCS
    assert KCS.columns == KCS_COLUMNS
    assert sorted(KCS.columns.values()) == sorted(set(DECLARATION_FIELDS) - set(NOT_IN_KCS))
    assert "additional_duty" not in DECLARATION_FIELDS  # a label of history, never sent for scoring


def test_fields_kcs_does_not_have_are_null():
    records = KCS.to_canonical(_source())
    assert records[NOT_IN_KCS].isna().all().all()


def test_feedback_written_before_containers_reads_them_as_null(tmp_path):
    """An outcomes file exported before the record had container numbers and bills of lading."""
    not_then = ["container_number", "bill_of_lading", "additional_duty"]
    old = KCS.to_canonical(_source(2)).drop(columns=not_then)
    old = old.assign(inspected_on=["2021-02-01", "2021-02-02"], outcome_received_at=["t1", "t2"])
    old.to_parquet(tmp_path / "outcomes.parquet", index=False)
    feedback = read_feedback(tmp_path)
    assert feedback["declaration_id"].tolist() == ["00000", "00001"]
    assert feedback[not_then].isna().all().all()
    assert feedback[INSPECTED_ON].tolist() == ["2021-02-01", "2021-02-02"]


def _feedback(rows: list[tuple[str, str | None, str | None, str | None]]) -> pd.DataFrame:
    """(declaration ID, fraud, inspected_on, received_at) as exported: critical_fraud 0 where
    fraud is given, null with it where the declaration was scored and not inspected."""
    source = _source(1)
    frame = pd.concat([KCS.to_canonical(source)] * len(rows), ignore_index=True)
    ids, fraud, inspected, received = zip(*rows)
    frame = frame.assign(
        declaration_id=ids,
        fraud=fraud,
        critical_fraud=[None if value is None else "0" for value in fraud],
        inspected_on=inspected,
        outcome_received_at=received,
        selected_by="model",
    )
    return frame[FEEDBACK_FIELDS].astype("str")


def test_a_declaration_without_an_outcome_never_replaces_one_with_an_outcome(tmp_path):
    _feedback([("A", "1", "2021-02-01", "t1"), ("B", None, None, None)]).to_parquet(tmp_path / "1.parquet")
    _feedback([("A", None, None, None), ("B", None, None, None), ("C", None, None, None)]).to_parquet(
        tmp_path / "2.parquet"
    )
    _feedback([("B", "0", "2021-02-03", "t3")]).to_parquet(tmp_path / "3.parquet")
    feedback = read_feedback(tmp_path).set_index("declaration_id")
    assert feedback["fraud"].fillna("not inspected").to_dict() == {"A": "1", "B": "0", "C": "not inspected"}
    assert feedback["source_file"].to_dict() == {
        "A": str(tmp_path / "1.parquet"),
        "B": str(tmp_path / "3.parquet"),
        "C": str(tmp_path / "2.parquet"),
    }


def test_feedback_relabels_the_files_and_adds_only_new_declarations_nobody_inspected():
    """An outcome replaces the files' rows of its declaration; a declaration scored and not
    inspected keeps the files' row (and its labels) where the files have one."""
    files = KCS.to_canonical(_source(4))  # declarations 00000 to 00003, all labelled
    feedback = _feedback([("00000", "1", "2021-02-01", "t1"), ("00001", None, None, None), ("NEW-A", None, None, None)])
    in_files: set[str] = set()
    chunks = list(merge_feedback([files.iloc[:2], files.iloc[2:]], feedback, in_files))
    merged = pd.concat(chunks, ignore_index=True)
    assert merged["declaration_id"].tolist() == ["00001", "00002", "00003", "00000", "NEW-A"]
    assert merged[LABEL_FIELDS].iloc[0].tolist() == ["1", "0"]  # the file's labels of 00001 stay
    assert merged[LABEL_FIELDS].iloc[-1].isna().all()
    assert list(chunks[-1].columns) == [*LABELLED_FIELDS, SELECTED_BY]  # fed-back rows say what selected them
    assert in_files == {"00000", "00001"}


def test_columns_are_mapped_and_values_kept_as_strings():
    source = _source()
    records = KCS.to_canonical(source)
    assert list(records.columns) == LABELLED_FIELDS
    assert len(records) == len(source)
    for column, field in KCS_COLUMNS.items():
        assert records[field].tolist() == source[column].tolist(), field
    # typing is validation's job: numbers, dates and codes stay as read, zeros included
    assert records["office_id"].tolist() == ["030", "040", "001", "120"]
    assert records["hs6_code"].tolist() == ["010121", "440890", "000001", "690722"]
    assert records["declaration_id"].tolist() == ["00000", "00001", "00002", "00003"]
    assert records["tax_rate"].tolist() == ["0.0", "8.0", "08", "1000"]
    assert records["item_price"].tolist() == ["372254.40", "5353.02", "0.10", "1"]
    assert records["declaration_date"].tolist() == ["2021-01-01", "2021-01-02", "2021-01-03", "2021-01-04"]
    assert all(isinstance(v, str) for col in records.columns if col not in NOT_IN_KCS for v in records[col])


def test_critical_fraud_is_one_only_where_kcs_says_2():
    records = KCS.to_canonical(_source())
    # KCS "Critical Fraud": 0 clean, 1 fraud, 2 critical fraud
    assert records["critical_fraud"].tolist() == ["0", "0", "1", "1"]
    assert records["fraud"].tolist() == ["0", "1", "1", "1"]


def test_critical_fraud_tolerates_padding_and_keeps_nulls():
    source = _source()
    source["Critical Fraud"] = pd.Series([" 2", "1 ", None, "0"], dtype="str")
    records = KCS.to_canonical(source)
    assert records.loc[0, "critical_fraud"] == "1"
    assert records.loc[1, "critical_fraud"] == "0"
    assert pd.isna(records.loc[2, "critical_fraud"])  # left for validation to reject
    assert records.loc[3, "critical_fraud"] == "0"


def test_index_is_preserved():
    source = _source()
    source.index = [10, 11, 12, 13]
    records = KCS.to_canonical(source)
    assert records.index.tolist() == [10, 11, 12, 13]
    assert records["critical_fraud"].tolist() == ["0", "0", "1", "1"]


@pytest.mark.parametrize("column", ["HS6 Code", "Date", "Seller ID", "Item Price"])
def test_missing_source_column_raises_clear_error(column):
    with pytest.raises(ValueError, match=rf"kcs layout: missing columns \['{column}'\]"):
        KCS.to_canonical(_source().drop(columns=[column]))


def test_all_missing_columns_are_named():
    source = _source().drop(columns=["Net Mass", "Importer ID"])
    with pytest.raises(ValueError) as error:
        KCS.to_canonical(source)
    assert "Net Mass" in str(error.value) and "Importer ID" in str(error.value)


@pytest.mark.parametrize("column", ["Fraud", "Critical Fraud"])
def test_missing_label_column_raises_clear_error(column):
    try:
        KCS.to_canonical(_source().drop(columns=[column]))
    except ValueError as error:
        assert column in str(error)
    except Exception as error:  # the bug: any other exception type
        raise AssertionError(f"expected ValueError naming {column!r}, got {error!r}") from error
    else:
        raise AssertionError("no error for a missing label column")


def test_read_source_keeps_leading_zeros_and_reads_empty_cells_as_null(tmp_path):
    source = _source()
    source.loc[1, "Seller ID"] = ""
    source.loc[2, "Courier ID"] = ""
    path = tmp_path / "kcs.csv"
    source.to_csv(path, index=False)
    records = read_source(str(path), KCS)
    assert records["office_id"].tolist() == ["030", "040", "001", "120"]
    assert records["hs6_code"].tolist() == ["010121", "440890", "000001", "690722"]
    assert records["declaration_id"].tolist() == ["00000", "00001", "00002", "00003"]
    assert records["tax_rate"].tolist() == ["0.0", "8.0", "08", "1000"]
    assert pd.isna(records.loc[1, "seller_id"]) and pd.isna(records.loc[2, "courier_id"])
    assert records.loc[0, "seller_id"] == "Sel-0"
    assert records["critical_fraud"].tolist() == ["0", "0", "1", "1"]


def test_read_source_keeps_na_like_strings(tmp_path):
    """Only empty cells are null (keep_default_na=False): "NA" is an ID like any other."""
    source = _source()
    source.loc[0, "Importer ID"] = "NA"
    source.loc[1, "Seller ID"] = "NULL"
    path = tmp_path / "kcs.csv"
    source.to_csv(path, index=False)
    records = read_source(str(path), KCS)
    assert records.loc[0, "importer_id"] == "NA"
    assert records.loc[1, "seller_id"] == "NULL"


def test_embedded_history_reads_as_strings(kcs_records):
    assert list(kcs_records.columns) == LABELLED_FIELDS
    assert len(kcs_records) > 40_000
    sample = kcs_records.sample(200, random_state=1)
    for field in kcs_records.columns:
        assert all(isinstance(v, str) for v in sample[field].dropna()), field
    assert set(kcs_records["critical_fraud"].unique()) <= {"0", "1"}
    assert set(kcs_records["fraud"].unique()) <= {"0", "1"}
    assert kcs_records["hs6_code"].str.fullmatch(r"[0-9]{6}").all()
    assert kcs_records["hs6_code"].str.startswith("0").any()  # leading zeros survived


def test_a_source_read_in_chunks_is_the_file_read_whole(tmp_path):
    path = tmp_path / "kcs.csv"
    pd.concat([_source()] * 3, ignore_index=True).to_csv(path, index=False)
    chunks = list(read_source_chunks(path, KCS, rows=5))
    assert [len(chunk) for chunk in chunks] == [5, 5, 2]
    pd.testing.assert_frame_equal(pd.concat(chunks), read_source(path, KCS))
    numbered = pd.concat([with_source(chunk, path, first_row=1 + 5 * i) for i, chunk in enumerate(chunks)])
    assert numbered["source_row"].tolist() == list(range(1, 13))  # file rows, across chunks
