"""`customs-risk`: batch scoring with the service's code, and the metrics table."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Customs risk targeting.", no_args_is_help=True, add_completion=False)
console = Console(stderr=True)


def _read(path: Path) -> pd.DataFrame:
    if path.suffix.lower() == ".parquet":
        return pd.read_parquet(path)
    if path.suffix.lower() == ".csv":
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    raise typer.BadParameter(f"{path}: expected a .csv or .parquet file", param_hint="--input")


@app.command()
def score(
    input: Path = typer.Option(..., "--input", exists=True, dir_okay=False, help="CSV or Parquet of declarations"),
    output: Path = typer.Option(..., "--output", help="where to write results, same format as the input"),
    max_reasons: int = typer.Option(3, help="reasons per declaration"),
) -> None:
    """Score a file of canonical declarations with the packaged champion, as the service would."""
    import bentoml

    from models.bundle import InvalidDeclarations, score_declarations
    from serving.loading import load_packaged, model_tag

    if input.suffix.lower() != output.suffix.lower():
        raise typer.BadParameter("the output must have the input's format (.csv or .parquet)", param_hint="--output")
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    records = _read(input)
    bento_model = bentoml.models.get(model_tag())
    model = load_packaged(bento_model)
    console.print(f"scoring {len(records):,} declarations with {bento_model.tag}")
    try:
        results = score_declarations(model, records, max_reasons)
    except InvalidDeclarations as invalid:
        console.print(f"[red]nothing scored:[/red] {invalid}")
        raise typer.Exit(2) from None
    results["reasons"] = results["reasons"].map(json.dumps)
    if output.suffix.lower() == ".parquet":
        results.to_parquet(output, index=False)
    else:
        results.to_csv(output, index=False)
    lanes = results["lane"].value_counts().to_dict()
    console.print(f"wrote {output}: " + ", ".join(f"{lane} {n:,}" for lane, n in sorted(lanes.items())))


@app.command()
def synthesize(
    rows: int = typer.Option(..., "--rows", min=1, help="how many declarations"),
    seed: int = typer.Option(0, "--seed", help="the same seed writes the same rows"),
    output: Path = typer.Option(..., "--output", help="a .csv or .parquet file"),
) -> None:
    """Write synthetic labelled declarations with planted fraud, to measure beyond the KCS history."""
    from pipelines.synthesize import synthesize as generate, write_declarations

    if output.suffix.lower() not in (".csv", ".parquet"):
        raise typer.BadParameter("expected a .csv or .parquet file", param_hint="--output")
    write_declarations(generate(rows, seed), output)
    console.print(f"wrote {rows:,} synthetic declarations (seed {seed}) to {output}")


@app.command()
def metrics(path: Path = typer.Option(Path("metrics/targeting.json"), help="metrics file of the evaluate stage")) -> None:
    """Print the validation window's targeting metrics as a table."""
    values = json.loads(path.read_text())
    rates = sorted({key.rsplit("_", 1)[1] for key in values if key.startswith("precision_at_")}, key=float)
    table = Table(title=f"Validation window ({int(values['validation_rows']):,} declarations)")
    table.add_column("inspected")
    for column in ("precision", "recall", "duty recovered", "critical recall"):
        table.add_column(column, justify="right")
    for rate in rates:
        table.add_row(
            f"top {rate}%",
            *(f"{values[f'{name}_at_{rate}']:.3f}" for name in ("precision", "recall", "duty_recovered", "critical_recall")),
        )
    Console().print(table)
    Console().print(
        f"ROC AUC {values['roc_auc']:.3f}   PR AUC {values['pr_auc']:.3f}   Brier {values['brier']:.4f}   "
        f"critical ROC AUC {values.get('critical_roc_auc', float('nan')):.3f}"
    )


if __name__ == "__main__":
    app()
