"""docs/ and the README in step with the code, where a test can tell: the record's fields
(docs/record.md against features/schema.py), the API's paths and status codes (docs/api.md against
the OpenAPI document the service serves), no file of the repository citing a document or a section
the repository does not hold, every command the README shows wired to a real Makefile target,
`customs-risk` command, DVC stage or API (tests/e2e/test_readme_commands.py runs the quick ones as
written), the README's headline figures equal to metrics/targeting.json, and docs/commands.md
listing every command there is."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import typer.main
import yaml

from features.schema import DECLARATION_FIELDS, LABEL_FIELDS
from serving.openapi import contract_document
from tests.conftest import REPO

DOCS = REPO / "docs"
README = REPO / "README.md"


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


# Sections: a link to `page.md#anchor` (or `#anchor` on the same page) names a heading of that page,
# as GitHub makes its anchor.
_SECTION_LINK = re.compile(r"\]\(([^)#\s]*)#([^)\s]+)\)")
_FENCE = re.compile(r"^```.*?^```", flags=re.MULTILINE | re.DOTALL)


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = _FENCE.sub("", page.read_text())  # a `# comment` in a code block is no heading
    return {anchor(m) for m in re.findall(r"^#{1,6} (.+)$", text, flags=re.MULTILINE)}


def _markdown_pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def test_every_link_to_a_section_names_a_heading_of_its_page():
    broken = []
    for page in _markdown_pages():
        for target, section in _SECTION_LINK.findall(_FENCE.sub("", page.read_text())):
            linked = (page.parent / target).resolve() if target else page
            if linked.suffix != ".md" or not linked.is_file():
                continue  # a missing page is test_no_tracked_file_cites_a_document_that_is_not_in_the_repository's
            if section not in anchors(linked):
                broken.append(f"{page.relative_to(REPO)}: {target}#{section}")
    assert not broken, "links to sections that do not exist:\n" + "\n".join(broken)


@pytest.mark.parametrize(
    ("heading", "expected"),
    [
        ("Scale: `make scale ROWS=N`", "scale-make-scale-rowsn"),
        ("Scoring at the speed of the model (issue 14)", "scoring-at-the-speed-of-the-model-issue-14"),
        ("The champion rule", "the-champion-rule"),
    ],
)
def test_anchors_are_githubs(heading, expected):
    assert anchor(heading) == expected


# The README's commands: each line (or lines joined by a trailing backslash or an open quote) of its
# shell code blocks, without comments.
_SHELL_BLOCK = re.compile(r"^```(?:bash|sh|shell|console)?\n(.*?)^```", flags=re.MULTILINE | re.DOTALL)


def command_lines(text: str) -> list[str]:
    """Every command of the markdown's shell code blocks, as one string each, comments removed."""
    commands = []
    for block in _SHELL_BLOCK.findall(text):
        pending = ""
        for line in block.splitlines():
            pending += line
            if pending.endswith("\\"):
                pending = pending[:-1]
                continue
            try:
                words = shlex.split(pending, comments=True)
            except ValueError:  # a quote still open: the command goes on on the next line
                pending += "\n"
                continue
            if words:
                commands.append(shlex.join(words))
            pending = ""
        assert not pending.strip(), f"a command of the README never ends: {pending!r}"
    return commands


def simple_commands(command: str) -> list[list[str]]:
    """The commands of a line, split at `&&`, `;` and `|`, without leading VAR=value assignments."""
    parts, current = [], []
    for word in [*shlex.split(command), "&&"]:
        if word in ("&&", ";", "|", "||"):
            while current and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", current[0]):
                current.pop(0)
            if current:
                parts.append(current)
            current = []
        else:
            current.append(word)
    return parts


def readme_commands() -> list[str]:
    return command_lines(README.read_text())


def makefile_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z][\w-]*)\s*:(?!=)", text, flags=re.MULTILINE))


def makefile_variables() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return set(re.findall(r"\$\(([A-Z_][A-Z0-9_]*)\)", text)) | set(
        re.findall(r"^(?:export )?([A-Z_][A-Z0-9_]*)\s*[?:]?=", text, flags=re.MULTILINE)
    )


def cli_commands() -> dict:
    """Every `customs-risk` command by its words (`score`, `alerts import`). Typer carries its own
    click, so groups, options and arguments are told apart by their attributes."""
    from serving.cli import app

    commands, groups = {}, [((), typer.main.get_command(app))]
    while groups:
        words, group = groups.pop()
        for name, command in group.commands.items():
            if hasattr(command, "commands"):
                groups.append(((*words, name), command))
            else:
                commands[" ".join((*words, name))] = command
    return commands


def dvc_stages() -> list[str]:
    return list(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])


def _params_key_problem(assignment: str) -> str | None:
    key, _, _ = assignment.partition("=")
    node = yaml.safe_load((REPO / "params.yaml").read_text())
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return f"params.yaml has no {key}"
        node = node[part]
    return None


def _make_problem(words: list[str]) -> str | None:
    targets = [w for w in words[1:] if "=" not in w]
    variables = [w.split("=", 1)[0] for w in words[1:] if "=" in w]
    if not targets:
        return "`make` without a target"
    missing = [f"target {t}" for t in targets if t not in makefile_targets()]
    missing += [f"variable {v}" for v in variables if v not in makefile_variables()]
    return f"the Makefile has no {', '.join(missing)}" if missing else None


def _cli_problem(words: list[str]) -> str | None:
    commands = cli_commands()
    args = words[1:]
    for size in (2, 1):
        if " ".join(args[:size]) in commands:
            command, args = commands[" ".join(args[:size])], args[size:]
            break
    else:
        return f"customs-risk has no command {' '.join(args[:2])!r} (it has {sorted(commands)})"
    options = {opt: p for p in command.params if p.param_type_name == "option" for opt in (*p.opts, *p.secondary_opts)}
    arguments = [p for p in command.params if p.param_type_name == "argument"]
    positional, words_left = 0, list(args)
    while words_left:
        word = words_left.pop(0)
        if word.startswith("-"):
            name = word.split("=", 1)[0]
            if name not in options:
                return f"customs-risk {command.name} has no option {name}"
            if not options[name].is_flag and "=" not in word:
                words_left.pop(0)
        else:
            positional += 1
    if positional > len(arguments) and not any(a.nargs == -1 for a in arguments):
        return f"customs-risk {command.name} takes {len(arguments)} arguments, the README gives {positional}"
    return None


DVC_COMMANDS = {
    ("repro",),
    ("exp", "run"),
    ("exp", "show"),
    ("metrics", "diff"),
    ("metrics", "show"),
    ("plots", "show"),
}


def _dvc_problem(words: list[str]) -> str | None:
    args = words[1:]
    command = next((c for c in DVC_COMMANDS if tuple(args[: len(c)]) == c), None)
    if command is None:
        return f"not a dvc command this project uses: {' '.join(words)}"
    rest = args[len(command) :]
    problems = [_params_key_problem(rest[i + 1]) for i, word in enumerate(rest[:-1]) if word in ("-S", "--set-param")]
    if command == ("repro",):
        problems += [f"dvc.yaml has no stage {w}" for w in rest if not w.startswith("-") and w not in dvc_stages()]
    problems = [p for p in problems if p]
    return "; ".join(problems) or None


def curl_request(command: str) -> dict:
    """A README `curl` command as a request: method, path, headers and JSON body."""
    words = shlex.split(command)
    request = {"method": "GET", "url": None, "headers": {}, "body": None}
    i = 1
    while i < len(words):
        word = words[i]
        if word == "-X":
            request["method"], i = words[i + 1], i + 1
        elif word == "-H":
            name, _, value = words[i + 1].partition(":")
            request["headers"][name.strip()], i = value.strip(), i + 1
        elif word in ("-d", "--data"):
            request["body"], i = words[i + 1], i + 1
        elif not word.startswith("-"):
            request["url"] = word
        i += 1
    request["path"] = urlsplit(request["url"] if "//" in request["url"] else f"http://{request['url']}").path
    return request


def _curl_problem(command: str) -> str | None:
    from features.schema import check_requests
    from serving.requests import declaration_type_errors

    request = curl_request(command)
    document = contract_document(max_batch=1000, secured=False)
    operation = document["paths"].get(request["path"], {}).get(request["method"].lower())
    if operation is None:
        return f"the service has no {request['method']} {request['path']}"
    if request["body"] is None:
        return None
    if request["headers"].get("Content-Type") != "application/json":
        return "a body sent without Content-Type: application/json gets 400"
    body = json.loads(request["body"])
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    if set(body) - set(schema["properties"]) or set(schema.get("required", ())) - set(body):
        return f"the body's keys {sorted(body)} are not {request['path']}'s parameters {sorted(schema['properties'])}"
    if request["path"] == "/score":
        errors = declaration_type_errors(body["declarations"])
        failures = [] if errors else check_requests(body["declarations"]).failures.to_dict("records")
        if errors or failures:
            return f"the README's declaration is invalid: {errors or failures}"
    return None


def command_problem(command: str) -> str | None:
    """Why a command the README shows would not run here (None when it is wired to something real)."""
    for words in simple_commands(command):
        program = words[0]
        if program == "make":
            problem = _make_problem(words)
        elif program == ".venv/bin/customs-risk":
            problem = _cli_problem(words)
        elif program == "dvc":
            problem = _dvc_problem(words)
        elif program == "curl":
            problem = _curl_problem(shlex.join(words))
        elif program in ("source", "."):
            venv = re.search(r"^VENV\s*:?=\s*(\S+)", (REPO / "Makefile").read_text(), flags=re.MULTILINE)
            problem = None if words[1:] == [f"{venv.group(1)}/bin/activate"] else f"not the Makefile's venv: {words}"
        else:
            problem = f"the test does not know how to check {program!r}: add it to command_problem"
        if problem:
            return problem
    return None


# In the outside contract (section 2), not in the code yet: the README shows them, as the contract
# does, and their check is an expected failure until they land (then it passes by itself).
PENDING: set[str] = set()  # none today


def _pending(command: str) -> bool:
    words = shlex.split(command)
    name = " ".join([words[0].removeprefix(".venv/bin/"), *words[1:2]])
    return name in PENDING


def test_the_readme_commands_are_found():
    commands = readme_commands()
    for expected in ("make run", "make test", "make check", "make serve", "make ui", "make simulate", "dvc repro"):
        assert expected in commands, f"the README must show `{expected}`"
    programs = {shlex.split(c)[0] for c in commands}
    assert {"make", "dvc", "curl", ".venv/bin/customs-risk"} <= programs
    assert any(c.startswith(".venv/bin/customs-risk score ") for c in commands)
    assert any(c.startswith(".venv/bin/customs-risk report ") for c in commands)
    assert any(c.startswith(".venv/bin/customs-risk approve ") for c in commands)
    assert [c for c in commands if c.startswith("curl")], "the README shows one curl example"


@pytest.mark.parametrize("command", readme_commands())
def test_every_command_the_readme_shows_is_wired_to_something_real(command):
    problem = command_problem(command)
    if problem and _pending(command):
        pytest.xfail(f"in the contract, not in the code yet: {problem}")
    assert not problem, f"README: `{command}`: {problem}"


@pytest.mark.parametrize(
    ("command", "problem"),
    [
        ("make nothing-here", "the Makefile has no target nothing-here"),
        (".venv/bin/customs-risk score --inputs a.csv", "customs-risk score has no option --inputs"),
        (".venv/bin/customs-risk nothing", "customs-risk has no command"),
        ("dvc exp run -S train.no_such_knob=1", "params.yaml has no train.no_such_knob"),
        ("dvc repro no-such-stage", "dvc.yaml has no stage no-such-stage"),
        ("curl -s localhost:3000/nothing", "the service has no GET /nothing"),
        ("rm -rf data", "the test does not know how to check 'rm'"),
    ],
)
def test_a_command_that_is_not_wired_is_caught(command, problem):
    assert problem in (command_problem(command) or "")


def test_the_command_lines_of_a_block_are_joined_and_stripped_of_comments():
    text = '```bash\nmake run   # all of it\ncurl -d \'{"a":\n 1}\' x \\\n  -s\n```\n```json\n{"no": 1}\n```\n'
    assert command_lines(text) == ["make run", "curl -d '{\"a\":\n 1}' x -s"]


def test_the_readme_is_short_and_starts_with_the_two_commands():
    text = README.read_text()
    assert len(text.splitlines()) <= 300, "the README is the front door: details go to docs/"
    first = command_lines(text)[:2]
    assert first == ["make run", "make test"], first


# The headline figures of the README are metrics/targeting.json's, as `customs-risk metrics` prints them.
def _table(text: str, header: str) -> list[list[str]]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.replace(" ", "").startswith(header.replace(" ", "")))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def test_the_readme_headline_figures_are_those_of_metrics_targeting_json():
    metrics = json.loads((REPO / "metrics" / "targeting.json").read_text())
    text = README.read_text()
    rates = _table(text, "| inspected | precision | recall | duty recovered | critical recall |")
    assert [row[0] for row in rates] == [f"top {n}%" for n in (1, 2, 5, 10)]
    for row in rates:
        n = row[0].removeprefix("top ").removesuffix("%")
        names = ("precision", "recall", "duty_recovered", "critical_recall")
        assert row[1:] == [f"{metrics[f'{name}_at_{n}']:.3f}" for name in names], (
            "update the README's table from metrics/targeting.json (`customs-risk metrics`)"
        )
    lanes = _table(text, "| lane | share | hit rate |")
    figures = ("share", "hit_rate", "fraud_share", "duty_share", "critical_share")
    assert lanes == [
        [lane, *(f"{metrics[f'lane_{lane}_{figure}']:.3f}" for figure in figures)]
        for lane in ("red", "yellow", "green")
    ]
    assert f"ROC AUC {metrics['roc_auc']:.3f}; critical ROC AUC {metrics['critical_roc_auc']:.3f}" in text
    assert f"{metrics['validation_rows']:,.0f} declarations" in text
    assert f"hold {metrics['lane_red_yellow_critical_share']:.1%} of the critical frauds" in text


# docs/commands.md lists every command there is.
def test_the_commands_page_lists_every_make_target_cli_command_and_dvc_stage():
    text = (DOCS / "commands.md").read_text()
    missing = [f"make {t}" for t in sorted(makefile_targets()) if not re.search(rf"`make {t}(?![\w-])", text)]
    missing += [
        f"customs-risk {c}" for c in sorted(cli_commands()) if f"customs-risk {c}" not in text and f"`{c} " not in text
    ]
    missing += [f"stage {s}" for s in dvc_stages() if f"`{s}`" not in text]
    assert not missing, f"docs/commands.md does not list: {missing}"


def test_the_commands_page_lists_the_contracts_commands():
    text = (DOCS / "commands.md").read_text()
    for command in (
        "make run",
        "make test",
        "make check",
        "make serve",
        "make ui",
        "make scale ROWS=N",
        "make simulate",
        ".venv/bin/customs-risk score --input IN --output OUT",
        ".venv/bin/customs-risk report --since D --until D --output DIR",
        ".venv/bin/customs-risk export-feedback",
        ".venv/bin/customs-risk simulate",
        ".venv/bin/customs-risk approve VERSION --by NAME",
        ".venv/bin/customs-risk alerts import FILE",
        "alerts export --since D --until D --output FILE",
    ):
        assert f"`{command}" in text, f"docs/commands.md lacks the contract's `{command}`"
