"""docs/ in step with the code, where a test can tell: the record's fields (docs/record.md against
features/schema.py), the API's paths and status codes (docs/api.md against the OpenAPI document the
service serves), and no file of the repository citing a document the repository does not hold."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from features.schema import DECLARATION_FIELDS, LABEL_FIELDS
from serving.openapi import contract_document
from tests.conftest import REPO

DOCS = REPO / "docs"


def _table_fields(text: str, header: str) -> list[str]:
    """The first column of the markdown table whose header row starts with `header`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.replace(" ", "").startswith(header.replace(" ", "")))
    fields = []
    for line in lines[start + 2 :]:  # past the header and the --- row
        if not line.startswith("|"):
            break
        fields.append(line.strip("|").split("|")[0].strip().strip("`"))
    return fields


def test_the_record_table_lists_every_field_of_the_schema_and_no_other():
    documented = _table_fields((DOCS / "record.md").read_text(), "| field | type | required |")
    assert len(documented) == len(set(documented)), "a field is listed twice"
    assert set(DECLARATION_FIELDS) - set(documented) == set(), (
        "fields of features/schema.py missing from docs/record.md"
    )
    assert set(documented) - set(DECLARATION_FIELDS) == set(), (
        "fields in docs/record.md that features/schema.py does not know"
    )


def test_the_record_table_says_which_fields_are_optional():
    from features.schema import OPTIONAL_FIELDS

    text = (DOCS / "record.md").read_text()
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.replace(" ", "").startswith("|field|type|required|"))
    optional = set()
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if cells[2].startswith("no"):
            optional.add(cells[0])
    assert optional == OPTIONAL_FIELDS


def test_the_labels_table_lists_the_schemas_labels():
    documented = _table_fields((DOCS / "record.md").read_text(), "| field | type | KCS column |")
    assert documented == LABEL_FIELDS


def _openapi_documents() -> list[dict]:
    return [contract_document(max_batch=1000, secured=secured) for secured in (True, False)]


def test_every_status_the_openapi_document_states_is_in_the_api_doc():
    text = (DOCS / "api.md").read_text()
    statuses = {
        status
        for document in _openapi_documents()
        for path in document["paths"].values()
        for operation in path.values()
        for status in operation["responses"]
    }
    assert {"200", "422"} <= statuses  # the walk found the responses
    missing = sorted(status for status in statuses if not re.search(rf"(?<!\d){status}(?!\d)", text))
    assert not missing, f"statuses the service's OpenAPI document states that docs/api.md does not: {missing}"
    table = set(re.findall(r"^\| (\d{3}) \|", text, flags=re.MULTILINE))
    assert statuses - {"200"} <= table, "every error status has a row in docs/api.md's table of errors"


def test_every_path_of_the_openapi_document_is_in_the_api_doc():
    text = (DOCS / "api.md").read_text()
    paths = {path for document in _openapi_documents() for path in document["paths"]}
    missing = sorted(path for path in paths if not re.search(rf"{re.escape(path)}(?![\w/])", text))
    assert not missing, f"APIs the service serves that docs/api.md does not describe: {missing}"


def test_the_api_doc_links_the_served_openapi_document():
    text = (DOCS / "api.md").read_text()
    assert "GET /docs.json" in text and "(../serving/openapi.py)" in text


# A cited markdown document: an upper-case name (`README.md`, with any path before it), anything
# under docs/, or the target of a markdown link.
_CITATION = re.compile(r"((?:\.{1,2}/|[\w-]+/)*(?:[A-Z][A-Z0-9_]*\.md|docs/[\w/-]+\.md))(?![\w.])")
_LINK = re.compile(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)")


def citations(text: str) -> set[str]:
    return set(_CITATION.findall(text)) | set(_LINK.findall(text))


def resolves(citation: str, cited_in: Path) -> bool:
    """The cited document is a file of the repository: relative to the citing file, or to the root."""
    for base in (cited_in.parent, REPO):
        target = (base / citation).resolve()
        if target.is_relative_to(REPO) and target.is_file():
            return True
    return False


def _tracked_text_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    files = []
    for name in filter(None, listed.split("\0")):
        path = REPO / name
        if path.is_file() and path.stat().st_size < 2_000_000:
            files.append(path)
    return files


def test_no_tracked_file_cites_a_document_that_is_not_in_the_repository():
    dangling = []
    for path in _tracked_text_files():
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue  # binary
        for citation in sorted(citations(text)):
            if not resolves(citation, path):
                dangling.append(f"{path.relative_to(REPO)}: {citation}")
    assert not dangling, "citations of documents the repository does not hold:\n" + "\n".join(dangling)


@pytest.mark.parametrize(
    ("text", "cited"),
    [
        ("see " + "CONTRACT" + ".md section 1", {"CONTRACT" + ".md"}),
        ("in ../shared/" + "DESIGN" + ".md beside", {"../shared/" + "DESIGN" + ".md"}),
        ("the fields (docs/record.md), the API", {"docs/record.md"}),
        ("[the API](" + "api.md#errors)", {"api.md"}),
        ("data/model/model_card.md is an output", set()),
    ],
)
def test_citations_are_found(text, cited):
    assert citations(text) == cited


def test_a_citation_resolves_only_to_a_file_in_the_repository():
    assert resolves("docs/api.md", REPO / "README.md")
    assert resolves("api.md", DOCS / "record.md")
    assert resolves("README.md", REPO / "tests" / "test_docs.py")
    assert not resolves("CONTRACT" + ".md", REPO / "README.md")
    assert not resolves("../shared/" + "CONTRACT" + ".md", REPO / "README.md")
    assert not resolves("docs/" + "nothing.md", REPO / "README.md")
