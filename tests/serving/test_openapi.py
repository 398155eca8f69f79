"""The served OpenAPI document: valid OpenAPI, and what it says a declaration is agrees with
what the service checks (the fuzz test in tests/e2e holds the service to it over HTTP)."""

from __future__ import annotations

import jsonschema_rs
import pandas as pd
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.record import BOUNDED_FIELDS, DECLARATION_FIELDS, OPTIONAL_FIELDS, is_container_number
from features.schema import RECORD, check_declarations
from serving.openapi import ISO6346_FORMAT, contract_document
from serving.requests import declaration_type_errors, outcome_errors
from tests.e2e.stack import contract_example


def _json_schema(openapi_schema: dict) -> dict:
    """OpenAPI 3.0's `nullable` as JSON Schema says it."""
    if openapi_schema.get("nullable") and "type" in openapi_schema:
        openapi_schema = {**openapi_schema, "type": [openapi_schema["type"], "null"]}
    return {key: value for key, value in openapi_schema.items() if key != "nullable"}


def _validator(name: str) -> jsonschema_rs.Draft4Validator:
    schema = contract_document(5, False)["components"]["schemas"][name]
    schema = {**schema, "properties": {field: _json_schema(s) for field, s in schema["properties"].items()}}
    # the check digit, which JSON Schema cannot state, as a named format (make fuzz registers it too)
    return jsonschema_rs.Draft4Validator(schema, validate_formats=True, formats={ISO6346_FORMAT: is_container_number})


@pytest.mark.parametrize("secured", [False, True])
def test_the_document_is_valid_openapi(secured):
    schema = schemathesis.openapi.from_dict(contract_document(max_batch=7, secured=secured))
    operations = {operation.ok().path for operation in schema.get_all_operations()}
    assert operations == {"/score", "/outcomes", "/metadata", "/healthz", "/livez", "/readyz", "/metrics"}


def test_the_batch_limit_and_the_record_fields_are_the_services():
    document = contract_document(max_batch=7, secured=False)
    body = document["paths"]["/score"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["declarations"]["maxItems"] == 7
    declaration = document["components"]["schemas"]["Declaration"]
    assert list(declaration["properties"]) == DECLARATION_FIELDS
    assert set(DECLARATION_FIELDS) - set(declaration["required"]) == OPTIONAL_FIELDS
    assert declaration["additionalProperties"] is False


def test_only_a_secured_service_documents_keys_and_401():
    open_document, secured_document = contract_document(5, False), contract_document(5, True)
    assert "401" not in open_document["paths"]["/score"]["post"]["responses"]
    assert secured_document["paths"]["/score"]["post"]["security"] == [{"bearer": []}]
    assert "security" not in secured_document["paths"]["/healthz"]["get"]


def test_the_contract_example_matches_the_document():
    assert _validator("Declaration").is_valid(contract_example())


def _service_accepts(declaration: dict) -> bool:
    if declaration_type_errors([declaration]):
        return False
    return check_declarations(pd.DataFrame([declaration]), RECORD).failures.empty


DECLARATION, OUTCOME = _validator("Declaration"), _validator("Outcome")
CHANGES = st.dictionaries(
    st.sampled_from(DECLARATION_FIELDS + ["colour"]),
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.text(max_size=8),
        st.sampled_from(
            [
                "1899-12-31",
                "1900-01-01",
                "2099-12-31",
                "2100-01-01",
                "2021-02-29",
                "440890",
                "KR",
                "ZZ",
                " ",
                "\x1c",
                "\u3000",
                "\ufeff",
            ]
        ),
        st.sampled_from(
            ["A" * 64, "A" * 65, "1" * 65, "CSQU3054383", "CSQU3054384", "csqu3054383", "CSQU305438", "BICU1234565"]
        ),
    ),
    max_size=3,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(changes=CHANGES)
def test_the_document_and_the_service_agree_on_every_declaration(changes):
    """Whatever the document admits, the service's checks accept, and whatever it rejects, they
    reject: the same judgement both ways."""
    declaration = {**contract_example(), **changes}
    assert _service_accepts(declaration) is DECLARATION.is_valid(declaration), declaration


@settings(max_examples=300, deadline=None)
@given(
    changes=st.dictionaries(
        st.sampled_from(["declaration_id", "inspected_on", "result", "additional_duty", "notes", "inspector"]),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(),
            st.floats(),
            st.text(max_size=6),
            st.sampled_from(
                ["fraud", "2099-12-31", "2100-01-01", "\u3000", 0, 0.0, -0.0, -1e-9, 1.5e9, 10**308, 2 * 10**308]
            ),
        ),
        max_size=3,
    )
)
def test_the_document_and_the_service_agree_on_every_outcome(changes):
    outcome = {"declaration_id": "97061800", "inspected_on": "2021-03-02", "result": "fraud", **changes}
    accepted = not outcome_errors([outcome])
    assert accepted is OUTCOME.is_valid(outcome), outcome


def _declaration_schema() -> dict:
    return contract_document(5, False)["components"]["schemas"]["Declaration"]


@pytest.mark.parametrize("field", BOUNDED_FIELDS)
def test_every_identifier_and_code_is_documented_as_at_most_64_characters(field):
    assert _declaration_schema()["properties"][field]["maxLength"] == 64


@pytest.mark.parametrize("field", ["departure_country", "origin_country"])
def test_the_unknown_country_zz_is_documented(field):
    schema = _declaration_schema()["properties"][field]
    assert "ZZ" in schema["enum"] and "KR" in schema["enum"] and "XX" not in schema["enum"]
    assert "unknown" in schema["description"]


def test_container_number_and_bill_of_lading_are_documented_as_optional():
    properties = _declaration_schema()["properties"]
    container, bill = properties["container_number"], properties["bill_of_lading"]
    assert container["nullable"] and bill["nullable"]
    assert container["pattern"] == "^[A-Z]{3}[UJZ][0-9]{7}$" and container["format"] == ISO6346_FORMAT
    assert "check digit" in container["description"]
    assert bill["maxLength"] == 64


@pytest.mark.parametrize(
    ("changes", "valid"),
    [
        ({"origin_country": "ZZ"}, True),
        ({"container_number": "CSQU3054383", "bill_of_lading": "MEDUKR123456"}, True),
        ({"container_number": None, "bill_of_lading": None}, True),
        ({"container_number": "CSQU3054384"}, False),
        ({"importer_id": "Q" * 65}, False),
        ({"bill_of_lading": "B" * 65}, False),
    ],
)
def test_the_document_and_the_service_agree_on_the_new_values(changes, valid):
    declaration = {**contract_example(), **changes}
    assert DECLARATION.is_valid(declaration) is valid
    assert _service_accepts(declaration) is valid
