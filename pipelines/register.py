"""Stage register: a new registry version, judged against the champion on the same declarations
by the same code, and put in service only as `governance.promotion` says (models.governance).

The evidence is the new version's validation window, less what the champion learned from: a
model refit on history through a day has seen the labels of every declaration up to it, and its
frozen entity histories hold them, so its figures there would be in-sample. On the declarations
dated after its history, the champion is scored as package would serve it (its registry files,
its feature state, its lane thresholds as packaged) and both sides go through the evaluate
stage's figures (models.metrics.window_figures). Where the window holds no such declaration and
both versions were validated on the same window, each one's own evaluate figures (out of sample
for both) are the evidence; otherwise there is none, and the rule recommends nothing.
"""

from __future__ import annotations

import traceback

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from features.schema import DECLARATION_FIELDS
from models.governance import promotion
from models.lanes import FOLLOW, SCORES, SCORES_ARTIFACTS, ScoreWindow, threshold_mode
from models.metrics import window_figures
from models.registry import ChampionRule, Comparison, configure_tracking, register_version, run_parquet
from pipelines.common import load_params, read_json, write_json
from pipelines.paths import MODEL_CARD, REGISTRATION, RUN, VALIDATED, VALIDATION_SCORES
from pipelines.paths import TARGETING_METRICS as METRICS
from serving.decide import decide

# where the evaluate stage logs a run's validation scores: what its packaged lanes start following
SCORES_ARTIFACT = f"{SCORES_ARTIFACTS}/{VALIDATION_SCORES.name}"


def champion_as_served(name: str, version: ModelVersion, records: pd.DataFrame, serving: dict) -> pd.DataFrame:
    """The champion's /score results for `records`, in their order, as the package stage would
    serve it with these `serving` params: the registry's files (boosters, calibrations, feature
    state frozen at its training), its lane thresholds as fitted on its own validation window,
    following the traffic from that window's scores where `serving.lane_thresholds` is `follow`.
    No analysts' rule or partner alert: the evidence is about the model."""
    model = mlflow.pyfunc.load_model(f"models:/{name}/{version.version}").unwrap_python_model().model
    window = None
    if threshold_mode(serving["lane_thresholds"]) == FOLLOW:
        scored = run_parquet(version.run_id, SCORES_ARTIFACT, ["declaration_date", *SCORES])
        window = ScoreWindow.latest(int(serving["follow_window"]), scored)
    return decide(model, records, reasons="none", window=window)


def window_records(scores: pd.DataFrame) -> pd.DataFrame:
    """The validated declarations behind validation scores, in the scores' order."""
    history = pd.read_parquet(
        VALIDATED, columns=DECLARATION_FIELDS, filters=[("declaration_date", ">=", scores["declaration_date"].min())]
    )
    return history.set_index("declaration_id").loc[scores["declaration_id"]].reset_index()[DECLARATION_FIELDS]


def measure(version: ModelVersion, run_id: str, params: dict) -> Comparison:
    """The champion `version` beside the run trained last, on the same declarations."""
    client = MlflowClient()
    name, rates = params["register"]["model_name"], params["evaluate"]["inspection_rates"]
    champion = client.get_run(version.run_id).data
    challenger = client.get_run(run_id).data
    trained_until = pd.Timestamp(champion.tags["training_window"].split("..")[1])
    scores = pd.read_parquet(VALIDATION_SCORES)
    unseen = scores[scores["declaration_date"] > trained_until].reset_index(drop=True)
    labelled = int(unseen["fraud"].notna().sum())
    window = challenger.tags["validation_window"]
    if labelled:
        dates = unseen.loc[unseen["fraud"].notna(), "declaration_date"]
        basis = (
            f"version {version.version} as served (its registry files, feature state as of {trained_until:%Y-%m-%d}, "
            f"lane thresholds {params['serving']['lane_thresholds']}) beside the challenger's validation scores, "
            f"on the {labelled:,} labelled of the {len(unseen):,} declarations of its validation window ({window}) "
            f"dated after the champion's history ({dates.min():%Y-%m-%d}..{dates.max():%Y-%m-%d}), both through "
            "the evaluate stage's figures"
        )
        try:
            served = champion_as_served(name, version, window_records(unseen), params["serving"])
        except Exception as failed:  # noqa: BLE001 -- whatever stops it, a champion this code cannot score is no evidence
            traceback.print_exc()
            return Comparison(
                str(version.version),
                f"{basis}; but it could not be scored: {failed!r}",
                0,
                window_figures(unseen, rates),
                None,
            )
        as_served = unseen.assign(**{c: served[c].to_numpy() for c in ("risk_score", "critical_score", "lane")})
        return Comparison(
            str(version.version), basis, labelled, window_figures(unseen, rates), window_figures(as_served, rates)
        )
    figures = read_json(METRICS)
    if champion.tags.get("validation_window") == window:
        data = champion.tags.get("data_version"), challenger.tags.get("data_version")
        basis = (
            f"both validated on {window}, which the champion's history covers: the figures each run's evaluate "
            "stage logged, out of sample for both"
            + ("" if data[0] == data[1] else f" (history data version {data[0]} and {data[1]}: labels may differ)")
        )
        return Comparison(
            str(version.version), basis, int(figures["validation_rows_labelled"]), figures, champion.metrics
        )
    basis = (
        f"every labelled declaration of the challenger's validation window ({window}) is in the history version "
        f"{version.version} learned from (to {trained_until:%Y-%m-%d}), and it was validated on another window "
        f"({champion.tags.get('validation_window')})"
    )
    return Comparison(str(version.version), basis, 0, figures, None)


def main() -> None:
    params = load_params()
    register = params["register"]
    run = read_json(RUN)
    rule = ChampionRule(register["champion_metric"], tuple(register["guard_metrics"]), register["guard_tolerance"])
    configure_tracking()
    decision = register_version(
        run["model_uri"],
        register["model_name"],
        run["run_id"],
        read_json(METRICS),
        rule,
        lambda champion: measure(champion, run["run_id"], params),
        promotion(params["governance"]["promotion"]),
        model_card=MODEL_CARD.read_text(),
    )
    write_json(REGISTRATION, decision)
    served = decision["champion"]
    print(
        f"register: {decision['name']} version {decision['version']} -> {decision['alias'] or 'no alias'} "
        f"({decision['reason']}); champion: version {served['version']}, approved by {served['approved_by']} "
        f"at {served['approved_at']}"
    )
    if decision["alias"] == "challenger":
        print(
            f"register: version {decision['version']} is recommended and waits for a reviewer: "
            f"customs-risk approve {decision['version']} --by NAME [--note TEXT]"
        )


if __name__ == "__main__":
    main()
