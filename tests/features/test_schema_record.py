"""The record written once (features/record.py): the contract's tables come out of it, every
reader takes its fields and limits from it, and a rule's two forms (one value, a column) agree."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from features.adapters import KCS
from features.record import (
    DATE_PATTERN,
    DECLARATION,
    EARLIEST_DATE,
    FIELDS,
    LABELLED_FIELDS,
    LATEST_DATE,
    MAX_ID_CHARACTERS,
    OUTCOME,
    HistoryRules,
    history_limit_rules,
    markdown_table,
    parse_date,
)
from features.schema import LABELLED, RECORD
from tests.conftest import REPO

# The contract's labels table (CONTRACT section 1), as the record states it.
CONTRACT_LABELS = """\
| field | type | KCS column |
| --- | --- | --- |
| fraud | 0, 1, or null (not inspected) | Fraud |
| critical_fraud | 0, 1, or null (not inspected) | 1 where Critical Fraud == 2, else 0 |
| inspected_on | date or null: when the outcome became known | - |
| additional_duty | number >= 0 or null: duty the inspection assessed | - |"""


def test_the_record_table_of_the_docs_is_the_records_own():
    assert markdown_table(DECLARATION) in (REPO / "docs" / "record.md").read_text()


def test_the_outcome_table_is_the_contracts():
    assert markdown_table(OUTCOME, required_column=False) == CONTRACT_LABELS


def test_the_limits_reach_the_tables_and_the_rules():
    assert "0 <= x <= 1000" in FIELDS["tax_rate"].type
    names = {check.name for column in RECORD.schema.columns.values() for check in column.checks}
    assert {f"at_most_{MAX_ID_CHARACTERS}_characters", "tax_rate_at_most_1000"} <= names


def test_a_history_row_is_the_record_then_the_outcome():
    assert LABELLED.fields == LABELLED_FIELDS == [field.name for field in DECLARATION + OUTCOME]
    assert LABELLED.labels == ("fraud", "critical_fraud")
    assert LABELLED.details == ("inspected_on", "additional_duty")


def test_the_kcs_layout_reads_the_columns_the_contract_names():
    assert KCS.columns == {field.kcs: field.name for field in DECLARATION if field.kcs}


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        (EARLIEST_DATE, True),
        (LATEST_DATE, True),
        ("2020-02-29", True),
        ("1899-12-31", False),
        ("2100-01-01", False),
        ("0000-01-01", False),
    ],
)
def test_the_openapi_date_pattern_takes_the_years_the_parser_takes(text, valid):
    assert bool(re.fullmatch(DATE_PATTERN, text)) is valid
    assert (parse_date(text)[0] is None) is valid


HISTORY_LIMITS = history_limit_rules(HistoryRules(pd.Timestamp("2021-06-30"), pd.Timestamp("2020-01-01"), 5e8))
TEXT_RULES = [rule for rule in HISTORY_LIMITS if rule.name in ("hs_chapter_exists", "no_surrounding_spaces")]


@pytest.mark.parametrize("rule", TEXT_RULES, ids=lambda rule: rule.name)
@given(st.lists(st.one_of(st.text(max_size=8), st.from_regex(r"[0-9]{6}", fullmatch=True)), min_size=1, max_size=20))
def test_a_history_rule_gives_one_answer_for_a_value_and_for_its_column(rule, values):
    column = rule.test.column(pd.Series(values, dtype="str")).tolist()
    assert column == [rule.test.value(value) for value in values]
