"""`customs-risk approve` (CONTRACT section 2) and the comparison table `customs-risk metrics`
prints: the reviewer's side of models.governance.

Approving moves the registry's `champion` alias with the reviewer's name, the time and the note,
then builds the bento from it (the package stage, run by DVC so dvc.lock records it): what the
service serves after its next start is what was approved. The registry is the record; a package
stage that fails leaves the approval standing and says how to package again.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markdown import Markdown
from rich.markup import escape

from serving.settings import MODEL_NAME, Settings, child_environment, use_stores

console = Console(stderr=True)
NOT_APPROVED = 2  # exit status of a refused approval; a failed packaging after an approval exits 1
PACKAGE = ["dvc", "repro", "--single-item", "--force", "package"]
REGISTRATION = Path("data/model/registration.json")  # the register stage's decision (pipelines.paths)


def approve_command(
    version: str = typer.Argument(..., help="the registry version to put into service"),
    by: str = typer.Option(..., "--by", help="who approves it: stored as approved_by"),
    note: str = typer.Option("", "--note", help="why: stored as approval_note (required with --override)"),
    override: bool = typer.Option(False, "--override", help="approve a version the champion rule rejected"),
) -> None:
    """Put a registered version into service: the `champion` alias moves to it with approved_by,
    approved_at and approval_note, and the bento is built from it, so the service serves it from
    its next start. Approving an earlier version is the rollback. A version the champion rule
    rejected needs --override and a --note saying why. Exit 2: refused, nothing changed; 1:
    approved, but the bento could not be built (run `dvc repro --single-item --force package`)."""
    settings = Settings.from_environment()
    use_stores(settings)  # the checkout's MLflow store unless MLFLOW_TRACKING_URI names a team server
    from models.governance import ApprovalRefused, approve
    from models.registry import configure_tracking

    configure_tracking()
    root, name = Path.cwd(), MODEL_NAME
    try:
        recorded = approve(name, version, by, note, override)
    except ApprovalRefused as refused:
        console.print(f"[red]not approved:[/red] {escape(str(refused))}", soft_wrap=True)
        raise typer.Exit(NOT_APPROVED) from None
    replaced = f", replacing version {recorded['previous']}" if recorded["previous"] else ""
    overridden = f"; the rule's verdict set aside: {recorded['overridden']}" if recorded["overridden"] else ""
    console.print(
        f"{name} version {version} is the champion{replaced}: approved by {escape(recorded['approved_by'])} "
        f"at {recorded['approved_at']}{escape(overridden)}",
        soft_wrap=True,
    )
    if not (root / "dvc.yaml").is_file():
        console.print(
            "[yellow]not packaged:[/yellow] no dvc.yaml here; run `dvc repro --single-item --force package` in the "
            "checkout that builds the service",
            soft_wrap=True,
        )
        return
    venv = Path(sys.executable).parent
    packaged = subprocess.run([str(venv / PACKAGE[0]), *PACKAGE[1:]], cwd=root, env=child_environment(venv))
    if packaged.returncode:
        console.print(
            f"[red]approved, but not packaged[/red] (`{' '.join(PACKAGE)}` exited {packaged.returncode}): the "
            "service still serves the bento built before; fix the cause and run it again",
            soft_wrap=True,
        )
        raise typer.Exit(1)
    console.print(f"packaged version {version}: restart the service (`make serve`) to serve it", soft_wrap=True)


def print_comparison(registration: Path) -> None:
    """The register stage's comparison table (the last version registered beside the champion),
    where there is one."""
    if not registration.is_file():
        return
    report = json.loads(registration.read_text()).get("comparison")
    if not report:
        return
    from models.registry import comparison_markdown

    Console().print(Markdown(comparison_markdown(report)))
