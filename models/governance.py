"""Who put a model into service, when, and on what evidence (CONTRACT section 2, `customs-risk
approve`): a customs administration must answer for every model it served and be able to go back
to an earlier one, so the registry's `champion` alias moves only together with an approval
recorded on the version it points at.

An approval is three tags on the version: `approved_by`, `approved_at` (UTC, ISO 8601) and
`approval_note`; approving a version the champion rule rejected also stores the verdict that was
set aside (`approval_override`). A version approved again keeps its earlier periods in service in
`earlier_approvals`, and the version it replaced says when and for which (`retired_at`,
`retired_for`). The registered model's `champion_version` tag names the version the last recorded
approval put in service: where the alias points elsewhere, it was moved some other way (the MLflow
UI, which does not say by whom), and the next command that reads the champion records that before
it acts on it.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

CHAMPION, CHALLENGER = "champion", "challenger"
# params.yaml `governance.promotion`: a version the champion rule prefers waits for a reviewer
# (`approval`), or takes the champion alias itself (`auto`, approved_by `auto`)
APPROVAL, AUTO = "approval", "auto"
PROMOTIONS = (APPROVAL, AUTO)
BOOTSTRAP = "bootstrap"  # approved_by of a registry's first version: there is nothing to compare it with
UNRECORDED = "unrecorded"  # approved_by of an alias moved outside `customs-risk approve`
CHAMPION_VERSION = "champion_version"  # registered-model tag: what the last recorded approval put in service
RECOMMENDED, RECOMMENDATION = "recommended", "recommendation"  # the rule's verdict on a version, and why
OVERRIDE = "approval_override"
EARLIER = "earlier_approvals"
RETIRED_AT, RETIRED_FOR = "retired_at", "retired_for"
APPROVAL_TAGS = ("approved_by", "approved_at", "approval_note")  # as /metadata and the report show them


class ApprovalRefused(ValueError):
    """An approval that would put a version into service without the evidence or the reason the
    governance asks for; nothing was changed."""


def promotion(value: str) -> str:
    """params.yaml `governance.promotion`, checked where register reads it."""
    if value not in PROMOTIONS:
        raise ValueError(f"governance.promotion must be one of {', '.join(PROMOTIONS)}, got {value!r}")
    return value


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Approval:
    """Who put a version into service, when, and why (the tags the contract names)."""

    approved_by: str
    approval_note: str = ""
    approved_at: str = field(default_factory=utc_now)

    def tags(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def of(cls, version: ModelVersion) -> Approval | None:
        """The approval recorded on a version, None where nobody approved it."""
        tags = version.tags
        if "approved_by" not in tags:
            return None
        return cls(tags["approved_by"], tags.get("approval_note", ""), tags.get("approved_at", ""))


def alias_version(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def put_in_service(
    client: MlflowClient, name: str, version: str, approval: Approval, overridden: str | None = None
) -> str | None:
    """Record `approval` on `version` and move `champion` to it; returns the version it replaced
    (None when it was the first, or is the champion already). `overridden`: the champion rule's
    verdict the approval sets aside. Tags first, alias last: a failure halfway leaves the served
    version as it was, never a champion without its approval."""
    registered = client.get_registered_model(name)
    previous = registered.tags.get(CHAMPION_VERSION)
    chosen = client.get_model_version(name, version)
    earlier = Approval.of(chosen)
    if earlier is not None:
        history = json.loads(chosen.tags.get(EARLIER, "[]"))
        history.append({**earlier.tags(), RETIRED_AT: chosen.tags.get(RETIRED_AT)})
        client.set_model_version_tag(name, version, EARLIER, json.dumps(history))
    for key in (RETIRED_AT, RETIRED_FOR, OVERRIDE):
        if key in chosen.tags:
            client.delete_model_version_tag(name, version, key)
    for key, value in approval.tags().items():
        client.set_model_version_tag(name, version, key, value)
    if overridden:
        client.set_model_version_tag(name, version, OVERRIDE, overridden)
    client.set_registered_model_alias(name, CHAMPION, version)
    challenger = alias_version(client, name, CHALLENGER)
    if challenger is not None and str(challenger.version) == version:
        client.delete_registered_model_alias(name, CHALLENGER)  # it is no longer waiting for anyone
    client.set_registered_model_tag(name, CHAMPION_VERSION, version)
    if previous is None or previous == version:
        return None
    try:
        client.set_model_version_tag(name, previous, RETIRED_AT, approval.approved_at)
        client.set_model_version_tag(name, previous, RETIRED_FOR, version)
    except MlflowException:  # the version it replaced was deleted from the registry meanwhile
        pass
    return previous


def rejected_because(version: ModelVersion) -> str | None:
    """The champion rule's reason where it rejected the version; None where it recommended it or
    never judged it (a registry's first version, or one registered before approvals)."""
    if version.tags.get(RECOMMENDED) != "false":
        return None
    return version.tags.get(RECOMMENDATION, "the champion rule rejected it")


def recorded_champion(client: MlflowClient, name: str, command: str) -> ModelVersion | None:
    """The champion, with its approval on record: where the alias was moved outside `customs-risk
    approve`, that is recorded first (approved_by `unrecorded`, when `command` noticed it, and the
    rule's verdict where it had rejected the version), so nothing is served without a record."""
    current = alias_version(client, name, CHAMPION)
    if current is None:
        return None
    version = str(current.version)
    if client.get_registered_model(name).tags.get(CHAMPION_VERSION) == version:
        return current
    approval = Approval(
        UNRECORDED,
        f"the champion alias was moved to version {version} outside `customs-risk approve` (the MLflow UI, "
        f"or before approvals were recorded); {command} recorded it when it noticed",
    )
    put_in_service(client, name, version, approval, rejected_because(current))
    return client.get_model_version(name, version)


def approve(name: str, version: str, by: str, note: str = "", override: bool = False) -> dict:
    """`customs-risk approve`: put `version` into service on a reviewer's word. A version the
    champion rule rejected needs `override` and a `note` saying why the verdict is set aside;
    approving an earlier version is the rollback. Returns what was recorded."""
    if not by.strip():
        raise ApprovalRefused("--by must name the reviewer who approves")
    client = MlflowClient()
    recorded_champion(client, name, "customs-risk approve")
    try:
        chosen = client.get_model_version(name, version)
    except MlflowException:
        raise ApprovalRefused(f"the registry has no {name} version {version}") from None
    verdict = rejected_because(chosen)
    if verdict is not None and not override:
        raise ApprovalRefused(
            f"the champion rule rejected {name} version {version} ({verdict}): approve it anyway only with "
            "--override and a --note saying why"
        )
    if verdict is not None and not note.strip():
        raise ApprovalRefused("--override needs a --note: why the rule's verdict is set aside is stored with it")
    approval = Approval(by.strip(), note.strip())
    previous = put_in_service(client, name, version, approval, verdict)
    return {"name": name, "version": version, "previous": previous, "overridden": verdict, **approval.tags()}
