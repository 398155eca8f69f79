"""`customs-risk`: batch scoring with the service's code, and the metrics table."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from serving.approval import REGISTRATION, approve_command, print_comparison
from serving.feedback import export_feedback_command
from serving.settings import Settings, is_server_url, masked, use_stores
from serving.simulation import simulate_command

if TYPE_CHECKING:  # for the annotation only: each command imports what it uses when it runs
    from models.lanes import ScoreWindow
    from serving.alerts import AlertIndex

app = typer.Typer(help="Customs risk targeting.", no_args_is_help=True, add_completion=False)
console = Console(stderr=True)


# Exit statuses of `customs-risk score` (docs/commands.md).
EVERY_ROW_SCORED, SOME_ROWS_REJECTED, NOTHING_SCORED = 0, 3, 2
REJECTED_COLUMNS = ["row", "field", "message"]  # row: the input's data row, from 1
REASON_CHOICES = ("selected", "all", "none")  # as a /score request's "reasons"


def _read(path: Path) -> pd.DataFrame:
    if path.suffix.lower() == ".parquet":
        return pd.read_parquet(path)
    if path.suffix.lower() == ".csv":
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    raise typer.BadParameter(f"{path}: expected a .csv or .parquet file", param_hint="--input")


def _write(frame: pd.DataFrame, path: Path) -> None:
    if path.suffix.lower() == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)


def rejected_path(output: Path) -> Path:
    """Where the rows that could not be scored go: `scored.csv` -> `scored.rejected.csv`."""
    return output.with_name(f"{output.stem}.rejected{output.suffix}")


def rejected_rows(failures: pd.DataFrame) -> pd.DataFrame:
    """check_declarations' failures as the .rejected file lists them: input row from 1, field,
    message, one row per problem, in input order."""
    rows = failures.assign(row=failures["index"].astype("int64") + 1)[REJECTED_COLUMNS]
    return rows.reset_index(drop=True)


@app.command()
def score(
    input: Path = typer.Option(..., "--input", exists=True, dir_okay=False, help="CSV or Parquet of declarations"),
    output: Path = typer.Option(..., "--output", help="where to write results, same format as the input"),
    reasons: str = typer.Option(
        "selected",
        "--reasons",
        help="which declarations carry reasons: selected (red and yellow), all or none",
    ),
    max_reasons: int | None = typer.Option(
        None, help="reasons per declaration (default: the packaged serving.max_reasons, as the service)"
    ),
    audit_db: str | None = typer.Option(
        None,
        "--audit-db",
        help="continue the lane thresholds' window of this audit store (a SQLite path or postgresql:// URL), as the service would (its decisions are "
        "read, none written; default: start from the packaged validation scores)",
    ),
) -> None:
    """Score a file of canonical declarations with the packaged champion and the analysts' risk
    profiles (RISK_PROFILES), as the service would. Run from a checkout, it uses that checkout's
    BentoML and MLflow stores unless BENTOML_HOME / MLFLOW_TRACKING_URI say otherwise.

    Where the lanes' thresholds follow traffic (serving.lane_thresholds: follow), each row's are
    fitted on the scores of those scored before it, the file's rows in order after the packaged
    validation scores, or after the last decisions of the store given by --audit-db: the lanes
    the service would give the same rows sent in the same order. Nothing is written to the store.

    Valid rows are scored, in input order; invalid ones go to OUT with .rejected before the
    suffix (row from 1, field, message). Exit 0: every row scored; 3: some rejected; 2: none
    could be scored."""
    from features.schema import RECORD, check_declarations

    if reasons not in REASON_CHOICES:
        raise typer.BadParameter(
            f"expected one of {', '.join(REASON_CHOICES)}, got {reasons!r}", param_hint="--reasons"
        )
    if input.suffix.lower() != output.suffix.lower():
        raise typer.BadParameter("the output must have the input's format (.csv or .parquet)", param_hint="--output")
    try:
        records = _read(input)
    except (ValueError, OSError) as unreadable:  # pandas' parser and pyarrow errors are ValueErrors
        console.print(
            f"[red]nothing scored:[/red] {escape(str(input))} cannot be read: {escape(str(unreadable))}", soft_wrap=True
        )
        raise typer.Exit(NOTHING_SCORED) from None
    checked = check_declarations(records, RECORD)
    rejected = rejected_rows(checked.failures)
    settings = Settings.from_environment()
    use_stores(settings)  # before bentoml is imported: it fixes its store on first use
    console.print(f"stores: {escape(settings.describe_stores())}", soft_wrap=True)

    from models.bundle import RESULT_COLUMNS, InvalidDeclarations, validated_declarations
    from serving.audit import AuditStoreUnavailable
    from serving.decide import decide
    from serving.loading import ChampionUnavailable, load_packaged, model_tag, packaged_champion
    from serving.profiles import RiskProfileError, RiskProfiles

    try:
        bento_model = packaged_champion(model_tag(settings))
        model = load_packaged(bento_model)
        profiles = RiskProfiles.from_environment(settings)
        window = _lane_window(bento_model, model, audit_db)
    except (ChampionUnavailable, RiskProfileError, FileNotFoundError, AuditStoreUnavailable) as problem:
        console.print(f"[red]nothing scored:[/red] {escape(str(problem))}", soft_wrap=True)
        raise typer.Exit(NOTHING_SCORED) from None
    if max_reasons is None:
        max_reasons = int(dict(bento_model.info.metadata)["serving"]["max_reasons"])  # as the service reads it
    valid = checked.valid
    console.print(
        f"scoring {len(valid):,} of {len(records):,} declarations with {bento_model.tag}, "
        f"{len(profiles.rules)} risk profile rule(s) from {escape(str(profiles.path))}, up to {max_reasons} reasons each",
        soft_wrap=True,
    )
    results = _no_results()
    if len(valid):
        try:
            typed = validated_declarations(valid.reset_index(drop=True))
        except InvalidDeclarations as invalid:  # checked above with the same rules: not expected
            console.print(f"[red]nothing scored:[/red] {invalid}")
            raise typer.Exit(NOTHING_SCORED) from None
        results = decide(
            model,
            typed,
            rules=profiles.rules,
            alerts=_partner_alerts(settings),
            reasons=reasons,
            max_reasons=max_reasons,
            window=window,
        )[RESULT_COLUMNS]
        results["reasons"] = results["reasons"].map(json.dumps)
    _write_results(output, results, rejected, len(records))


def _lane_window(bento_model, model, audit_db: str | None) -> ScoreWindow | None:
    """The window the file's first row's thresholds follow: the packaged validation scores,
    after them the champion's last decisions in the store `audit_db` (the window the service
    would read now); None where the packaged thresholds are fixed."""
    from serving.audit import AuditStore
    from serving.loading import PackagedLanes

    lanes = PackagedLanes.of(bento_model, model.lanes)
    if not lanes.follows:
        console.print("lane thresholds: fixed, as fitted on the validation window")
        return None
    recent = None
    if audit_db is not None:
        if not is_server_url(audit_db) and not Path(audit_db).is_file():
            # opening it would make an empty store, hiding the mistake
            raise FileNotFoundError(f"no audit store at {audit_db} (--audit-db)")
        store = AuditStore(audit_db)  # AuditStoreUnavailable: not a store, or one that cannot be read
        try:
            recent = store.recent_scores(lanes.size, str(dict(bento_model.info.metadata)["version"]))
        finally:
            store.close()
    decided = "no decision of a store" if recent is None else f"{len(recent):,} decisions of {masked(audit_db or '')}"
    console.print(
        f"lane thresholds: following the last {lanes.size:,} declarations scored: the packaged validation "
        f"scores, then {escape(decided)}, then the file's rows in order",
        soft_wrap=True,
    )
    return lanes.window(recent)


def _partner_alerts(settings: Settings) -> AlertIndex:
    """The partner alerts of the center's store (RISK_AUDIT_DB), as the service sees them; no
    store, no alerts (the store is only read here)."""
    from serving.alert_exchange import LiveAlerts
    from serving.settings import SettingsError

    try:
        keys = settings.partner_keys_file()
    except SettingsError as problem:
        console.print(f"[yellow]hashed partner alerts not matched:[/yellow] {escape(str(problem))}", soft_wrap=True)
        keys = None
    live = LiveAlerts(settings.audit_db, keys)
    try:
        index = live.current()
        if live.keys_error:
            console.print(f"[yellow]partner keys not loaded:[/yellow] {escape(live.keys_error)}", soft_wrap=True)
        console.print(f"{len(index):,} partner alert(s) in the center's store", soft_wrap=True)
        return index
    finally:
        live.close()


def _no_results() -> pd.DataFrame:
    from models.bundle import RESULT_COLUMNS

    return pd.DataFrame({column: pd.Series(dtype="object") for column in RESULT_COLUMNS})


def _write_results(output: Path, results: pd.DataFrame, rejected: pd.DataFrame, rows: int) -> None:
    """Write OUT (the scored rows) and OUT.rejected (when rows were rejected), and exit with the
    status that says which: 0 every row scored, 3 some rejected, 2 none scored."""
    _write(results, output)
    lanes = results["lane"].value_counts().to_dict()
    console.print(
        f"wrote {output}: {len(results):,} scored" + "".join(f", {lane} {n:,}" for lane, n in sorted(lanes.items()))
    )
    rejects = rejected_path(output)
    if rejected.empty:
        if rejects.exists():  # from an earlier run of the same output: it would misreport this one
            rejects.unlink()
        raise typer.Exit(EVERY_ROW_SCORED)
    _write(rejected, rejects)
    console.print(
        f"[yellow]rejected {rejected['row'].nunique():,} of {rows:,} rows[/yellow]: {rejects} lists the row "
        f"(from 1), field and message of each of their {len(rejected):,} problems",
        soft_wrap=True,
    )
    raise typer.Exit(SOME_ROWS_REJECTED if len(results) else NOTHING_SCORED)


def _day(value: str, option: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"expected a date YYYY-MM-DD, got {value!r}", param_hint=option) from None


@app.command()
def audit(
    since: str = typer.Option(..., "--since", help="first day, YYYY-MM-DD (UTC), included"),
    until: str = typer.Option(..., "--until", help="last day, YYYY-MM-DD (UTC), included"),
    output: Path = typer.Option(..., "--output", help="a .csv or .parquet file"),
    table: str = typer.Option("decisions", help="decisions (each with its outcome, if reported) or outcomes"),
    db: str | None = typer.Option(
        None,
        help="the audit store, a SQLite path or postgresql:// URL (default: RISK_AUDIT_DB, else "
        "data/serving/audit.db in this checkout, as the service)",
    ),
) -> None:
    """Export the audit store by date range: every decision the service made, or every outcome
    reported to it."""
    from serving.audit import AuditStoreUnavailable, export

    if output.suffix.lower() not in (".csv", ".parquet"):
        raise typer.BadParameter("expected a .csv or .parquet file", param_hint="--output")
    try:
        store = db or Settings.from_environment().audit_store()
        rows = export(store, table, _day(since, "--since"), _day(until, "--until"))
    except (ValueError, FileNotFoundError, AuditStoreUnavailable) as problem:  # SettingsError is a ValueError
        console.print(f"[red]nothing exported:[/red] {escape(str(problem))}", soft_wrap=True)
        raise typer.Exit(2) from None
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix.lower() == ".parquet":
        rows.to_parquet(output, index=False)
    else:
        rows.to_csv(output, index=False)
    console.print(f"wrote {output}: {len(rows):,} {table} from {since} to {until}")


@app.command()
def report(
    since: str = typer.Option(..., "--since", help="first declaration date, YYYY-MM-DD, included"),
    until: str = typer.Option(..., "--until", help="last declaration date, YYYY-MM-DD, included"),
    output: Path = typer.Option(..., "--output", help="folder for index.html and kpis.json"),
    db: str | None = typer.Option(
        None,
        help="the audit store, a SQLite path or postgresql:// URL (default: RISK_AUDIT_DB, else "
        "data/serving/audit.db in this checkout, as the service)",
    ),
) -> None:
    """Targeting performance of the declarations dated in a period, from the audit store (read
    only) against the packaged champion's validation window: OUTPUT/index.html and
    OUTPUT/kpis.json (docs/report.md). Exit 2 when nothing could be reported, or when the period
    has no outcome yet (the report is written then, every hit rate null)."""
    from serving import report as reporting

    first, last = _day(since, "--since"), _day(until, "--until")
    try:
        settings = Settings.from_environment()
        store = db or settings.audit_store()
        if (
            not is_server_url(store) and not Path(store).is_file()
        ):  # before the champion is looked for: the commonest mistake
            raise reporting.ReportError(f"no audit store at {store}: set RISK_AUDIT_DB or pass --db")
        use_stores(settings)  # before bentoml is imported: it fixes its store on first use
        reference = reporting.load_reference(settings)
        for note in reference.notes:
            console.print(f"[yellow]note:[/yellow] {escape(note)}", soft_wrap=True)
        figures = reporting.make_report(store, first, last, output, reference)
    except (reporting.ReportError, ValueError) as problem:  # SettingsError is a ValueError
        console.print(f"[red]no report:[/red] {escape(str(problem))}", soft_wrap=True)
        raise typer.Exit(2) from None
    lanes = figures["lanes"]
    console.print(
        f"wrote {output}/index.html and kpis.json: {figures['decisions']:,} decisions, "
        + ", ".join(f"{lane} {lanes[lane]['decisions']:,}" for lane in lanes)
        + (f"; flagged drift: {', '.join(figures['drift']['flagged'])}" if figures["drift"]["flagged"] else ""),
        soft_wrap=True,
    )
    if not reporting.outcomes_reported(figures):
        console.print(
            f"[yellow]no outcome is reported yet[/yellow] for the {figures['decisions']:,} decisions dated {first} to "
            f"{last}: every hit rate in the report is null",
            soft_wrap=True,
        )
        raise typer.Exit(2)


@app.command()
def metrics(
    path: Path = typer.Option(Path("metrics/targeting.json"), help="metrics file of the evaluate stage"),
    registration: Path = typer.Option(REGISTRATION, help="the register stage's decision: its comparison table"),
) -> None:
    """Print the validation window's targeting metrics as a table, then the comparison the
    champion rule judged the last registered version on, where there was a champion."""
    values = json.loads(path.read_text())
    rates = sorted({key.rsplit("_", 1)[1] for key in values if key.startswith("precision_at_")}, key=float)
    table = Table(title=f"Validation window ({int(values['validation_rows']):,} declarations)")
    table.add_column("inspected")
    for column in ("precision", "recall", "duty recovered", "critical recall"):
        table.add_column(column, justify="right")
    for rate in rates:
        table.add_row(
            f"top {rate}%",
            *(
                f"{values[f'{name}_at_{rate}']:.3f}"
                for name in ("precision", "recall", "duty_recovered", "critical_recall")
            ),
        )
    Console().print(table)
    Console().print(
        f"ROC AUC {values.get('roc_auc', float('nan')):.3f}   PR AUC {values.get('pr_auc', float('nan')):.3f}   "
        f"Brier {values['brier']:.4f}   "
        f"critical ROC AUC {values.get('critical_roc_auc', float('nan')):.3f}"
    )
    if "lane_red_share" in values:  # not in metrics of a release before the lane policy
        _print_lanes(values)
    print_comparison(registration)


def _print_lanes(values: dict) -> None:
    from models.lanes import LANES
    from models.metrics import LANE_FIGURES

    lanes = Table(title="Lanes as packaged: what each holds")
    lanes.add_column("lane")
    for column in ("share", "hit rate", "frauds held", "duty at risk held", "critical frauds held"):
        lanes.add_column(column, justify="right")
    for lane in reversed(LANES):  # strictest first
        lanes.add_row(lane, *(f"{values[f'lane_{lane}_{figure}']:.3f}" for figure in LANE_FIGURES))
    Console().print(lanes)
    Console().print(f"red and yellow together hold {values['lane_red_yellow_critical_share']:.1%} of critical frauds")


app.command("export-feedback")(export_feedback_command)
app.command("approve")(approve_command)
app.command("simulate")(simulate_command)

alerts_app = typer.Typer(
    help="Partner alerts and watch lists in, confirmed findings out (docs/alerts.md).", no_args_is_help=True
)
app.add_typer(alerts_app, name="alerts")
ALERTS_REFUSED = 2  # exit status of `alerts import` and `alerts export` when nothing was done


def _alert_settings() -> tuple[Settings, Path | str]:
    """The settings and the center's store, or exit 2 saying what to set."""
    from serving.settings import SettingsError

    settings = Settings.from_environment()
    try:
        return settings, settings.audit_store()
    except SettingsError as problem:
        console.print(f"[red]nothing done:[/red] {escape(str(problem))}", soft_wrap=True)
        raise typer.Exit(ALERTS_REFUSED) from None


def _partner_keys(settings: Settings) -> dict[str, bytes]:
    from serving.alert_exchange import PartnerKeysError, load_partner_keys
    from serving.settings import SettingsError

    try:
        return load_partner_keys(settings.partner_keys_file())
    except (SettingsError, PartnerKeysError) as problem:  # they name files and partners, never a key
        console.print(f"[red]nothing done:[/red] {escape(str(problem))}", soft_wrap=True)
        raise typer.Exit(ALERTS_REFUSED) from None


@alerts_app.command("import")
def alerts_import(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="a JSON Lines alert file"),
) -> None:
    """Import a partner's alerts into the center's store (RISK_AUDIT_DB). Every line is checked;
    when any is invalid, each problem is printed as `line N: field: message`, nothing is
    imported, and the exit status is 2. An alert_id already stored is replaced."""
    from serving.alert_exchange import AlertStore
    from serving.alerts import AlertFileError, read_alert_file
    from serving.audit import AuditStoreUnavailable

    settings, store_path = _alert_settings()
    keys = _partner_keys(settings)
    try:
        alerts = read_alert_file(file, keys)
    except AlertFileError as invalid:
        for problem in invalid.problems:
            typer.echo(str(problem))
        console.print(
            f"[red]nothing imported:[/red] {len(invalid.problems):,} problem(s) in {escape(str(file))}", soft_wrap=True
        )
        raise typer.Exit(ALERTS_REFUSED) from None
    try:
        store = AlertStore(store_path)
        try:
            new, replaced = store.import_alerts(alerts)
        finally:
            store.close()
    except AuditStoreUnavailable as problem:
        console.print(f"[red]nothing imported:[/red] {escape(str(problem))}", soft_wrap=True)
        raise typer.Exit(ALERTS_REFUSED) from None
    console.print(
        f"imported {len(alerts):,} alert(s) from {escape(str(file))} into {escape(masked(store_path))}: "
        f"{new:,} new, {replaced:,} replaced",
        soft_wrap=True,
    )


@alerts_app.command("export")
def alerts_export(
    since: str = typer.Option(..., "--since", help="first inspection day, YYYY-MM-DD, included"),
    until: str = typer.Option(..., "--until", help="last inspection day, YYYY-MM-DD, included"),
    output: Path = typer.Option(..., "--output", help="the JSON Lines alert file to write"),
    partner: str | None = typer.Option(None, "--partner", help="hash every value with this partner's key"),
    valid_days: int = typer.Option(180, "--valid-days", min=1, help="days an alert stays active after the inspection"),
) -> None:
    """Write the declarations whose outcome inspected in the period was fraud or critical as
    alerts of this center (RISK_CENTER_CODE): on the importer, and on the container where
    declared. With --partner, every value is hashed with that partner's key
    (RISK_PARTNER_KEYS) and the file holds no raw identifier."""
    from serving.alert_exchange import export_findings, write_alert_file
    from serving.audit import AuditStoreUnavailable

    settings, store_path = _alert_settings()
    key = None
    if partner is not None:
        keys = _partner_keys(settings)
        if partner not in keys:
            console.print(
                f"[red]nothing exported:[/red] no key for partner {escape(repr(partner))} in RISK_PARTNER_KEYS",
                soft_wrap=True,
            )
            raise typer.Exit(ALERTS_REFUSED)
        key = keys[partner]
    try:
        findings = export_findings(
            store_path, _day(since, "--since"), _day(until, "--until"), settings.center_code, key, valid_days
        )
    except (ValueError, FileNotFoundError, AuditStoreUnavailable) as problem:
        console.print(f"[red]nothing exported:[/red] {escape(str(problem))}", soft_wrap=True)
        raise typer.Exit(ALERTS_REFUSED) from None
    write_alert_file(findings.alerts, output)
    note = f" ({findings.without_decision:,} without a stored decision, left out)" if findings.without_decision else ""
    console.print(
        f"wrote {escape(str(output))}: {len(findings.alerts):,} alert(s) of {settings.center_code} from "
        f"{findings.outcomes:,} fraud or critical outcome(s) inspected {since} to {until}{note}"
        + (f", values hashed for {escape(partner)}" if partner is not None else ""),
        soft_wrap=True,
    )


if __name__ == "__main__":
    app()
