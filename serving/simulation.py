"""`customs-risk simulate`: the loop as a center lives it, replayed on history.

The protocol of the public DATE/BACUDA customs-selection simulations, so figures compare: every
declaration before `start` is labelled; then period by period (15 days) a model is trained, with
the project's own featurize and train code, on what is known by the period's first day, scores the
period, a strategy inspects `inspection_rate` of it, and only those labels are revealed, known
from the period's last day. Each strategy keeps its own knowledge: what it inspected is all it
learns from. A leak here would flatter every figure, so the only labels a period's model reads
are in `Knowledge.frame`, which hides the rest (tests/serving/test_simulation.py checks it).

A period's model is a `RiskModel` as packaging makes one, and it scores the period as the
service would: from the feature state frozen at its training (volume counts do not move within
a period, as they do not between two retrains of a center), and the lane policy's picks are
`serving.decide`'s lanes.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import typer

from features.history import entity_keys
from features.matrix import ENTITIES_BY_NAME, training_features
from features.schema import DECLARATION_FIELDS
from models.bundle import RiskModel
from models.calibration import Calibration
from models.exploration import exploration_picks
from models.lanes import LanePolicy, LaneShares
from models.training import fit_rounds
from serving.decide import decide

PERIOD_COLUMNS = [
    "strategy",
    "period_start",
    "period_end",
    "declarations",
    "inspected",
    "hits",
    "frauds",
    "precision",
    "recall",
    "duty_recall",
    "critical_recall",
]
FIGURES = ["precision", "recall", "duty_recall", "critical_recall"]
LAST_PERIODS = 12  # the summary's second mean: the loop once it has settled
TABLE_WIDTH = 110  # the printed table's columns at full width
KNOWN_KINDS = ("importer", "combination")  # what a learner may have an outcome of (Coverage)


@dataclass(frozen=True)
class Settings:
    """What one run replays (params.yaml `simulate`, with `train`, `features` and `serving`);
    `rounds` are fewer than the pipeline's early-stopped count so that 27 periods x 6 learners
    fit in minutes (summary.json says how many)."""

    start: str
    period_days: int
    inspection_rate: float
    rounds: int
    critical_rounds: int
    seed: int
    smoothing: float
    train_params: dict
    shares: LaneShares
    exploration_key: str
    exploration_sweep: tuple[float, ...] = (0.0, 0.01, 0.05, 0.10)  # CONTRACT section 2's explore_*
    only: tuple[str, ...] = ()  # run these strategies alone (comparing variants); () runs all


@dataclass
class Knowledge:
    """The labels one learner has: every label before `start`, then only what it inspected, each
    known from the last day of the period it was inspected in."""

    history: pd.DataFrame
    revealed: np.ndarray  # per history row
    known_on: np.ndarray  # datetime64[D] per row; NaT where the declaration date is when

    @classmethod
    def initial(cls, history: pd.DataFrame, start: pd.Timestamp) -> Knowledge:
        return cls(
            history,
            np.array(history["declaration_date"] < start),
            np.full(len(history), np.datetime64("NaT"), dtype="datetime64[D]"),
        )

    def reveal(self, rows: np.ndarray, on: pd.Timestamp) -> None:
        self.revealed[rows] = True
        self.known_on[rows] = np.datetime64(on.date(), "D")

    def frame(self, until: pd.Timestamp) -> pd.DataFrame:
        """History dated before `until` as this learner knows it: unrevealed labels are null."""
        rows = (self.history["declaration_date"] < until).to_numpy()
        frame = self.history[rows].copy()
        hidden = ~self.revealed[rows]
        for label in ("fraud", "critical_fraud"):
            frame[label] = frame[label].astype("float64").where(~hidden)
        frame["inspected_on"] = pd.to_datetime(self.known_on[rows])
        return frame

    def known(self, keys: pd.Series, before: pd.Timestamp) -> set:
        """The keys (one per history row) of which this learner knows an outcome before `before`."""
        rows = self.revealed & (self.history["declaration_date"] < before).to_numpy()
        return set(keys[rows].dropna())


@dataclass(frozen=True)
class Scored:
    """A period's declarations (with their real outcomes, for judging only), one learner's
    model and its scores, and the inspected counts the model saw."""

    period: pd.DataFrame
    model: RiskModel | None
    risk: np.ndarray
    critical: np.ndarray
    duty_at_risk: np.ndarray
    counts: dict[str, np.ndarray]  # the entity counts the model read (features.history)


@dataclass
class Coverage:
    """What one strategy's learner knew of each period, and what its picks found where it knew
    the combination and where it did not: where the loop loses against full labels
    (docs/loop.md, "Why the loop stays short of the target here")."""

    known_share: dict[str, list[float]] = field(default_factory=lambda: {kind: [] for kind in KNOWN_KINDS})
    picks: dict[str, int] = field(default_factory=lambda: {"known": 0, "unknown": 0})
    hits: dict[str, int] = field(default_factory=lambda: {"known": 0, "unknown": 0})

    def add(self, known: dict[str, np.ndarray], picks: np.ndarray, fraud: np.ndarray) -> None:
        """`known`: per kind, whether the learner had an outcome of each period row's key."""
        for kind, rows in known.items():
            self.known_share[kind].append(float(rows.mean()))
        for where, rows in (("known", known["combination"]), ("unknown", ~known["combination"])):
            self.picks[where] += int((picks & rows).sum())
            self.hits[where] += int((picks & rows & fraud).sum())

    def summary(self) -> dict:
        inspected = sum(self.picks.values())
        return {
            **{f"{kind}_known_share": _mean(pd.Series(shares)) for kind, shares in self.known_share.items()},
            "picks_of_unknown_combination_share": round(self.picks["unknown"] / inspected, 4) if inspected else None,
            **{
                f"precision_on_{where}_combination": round(self.hits[where] / self.picks[where], 4)
                if self.picks[where]
                else None
                for where in ("known", "unknown")
            },
        }


IDENTITY = Calibration(1.0, 0.0)  # the booster's own probability: ranks and shares need no more


def train_model(knowledge: Knowledge, first: pd.Timestamp, settings: Settings) -> RiskModel:
    """What train and package make, from what `knowledge` holds before `first`: the project's
    features and boosters, fitted on the inspected rows only."""
    frame = knowledge.frame(first)
    matrix, state = training_features(frame, settings.smoothing)
    boosters = []
    for label, rounds in (("fraud", settings.rounds), ("critical_fraud", settings.critical_rounds)):
        y = frame[label].to_numpy(dtype="float64")
        learn = ~np.isnan(y)
        boosters.append(fit_rounds(matrix[learn], y[learn], settings.train_params, rounds))
    none = np.empty(0)
    unset = LanePolicy.fit(settings.shares, settings.exploration_key, none, none, none)  # each period fits its own
    return RiskModel(boosters[0], boosters[1], IDENTITY, IDENTITY, unset, state)


def score_period(knowledge: Knowledge, period: pd.DataFrame, first: pd.Timestamp, settings: Settings) -> Scored:
    """`period` (history rows) scored by the model trained on what `knowledge` held before it."""
    model = train_model(knowledge, first, settings)
    assessed = model.assess(period[DECLARATION_FIELDS])
    return Scored(period, model, assessed.risk, assessed.critical, assessed.duty_at_risk, assessed.inputs.counts)


def declared_duty(period: pd.DataFrame) -> np.ndarray:
    return (period["item_price"] * period["tax_rate"] / 100).to_numpy(dtype="float64")


def top(values: np.ndarray, count: int, taken: np.ndarray | None = None) -> np.ndarray:
    """A mask of the `count` highest values not already taken (ties by position)."""
    taken = np.zeros(len(values), dtype=bool) if taken is None else taken
    order = np.argsort(-np.asarray(values, dtype="float64"), kind="stable")
    order = order[~taken[order]]
    picks = np.zeros(len(values), dtype=bool)
    picks[order[: max(count, 0)]] = True
    return picks


def scaled_policy(scored: Scored, settings: Settings) -> LanePolicy:
    """The lane policy as params.yaml sets it, red capacity scaled to the inspection rate and
    fitted on the period's own scores, so each source gets its share of the period."""
    shares = settings.shares
    scale = settings.inspection_rate / (shares.red_share + shares.exploration_share)
    scaled = dataclasses.replace(
        shares,
        red_risk_share=shares.red_risk_share * scale,
        red_value_share=shares.red_value_share * scale,
        red_critical_share=shares.red_critical_share * scale,
        yellow_share=0.0,
        yellow_critical_share=0.0,
        exploration_share=shares.exploration_share * scale,
    )
    return LanePolicy.fit(scaled, settings.exploration_key, scored.risk, scored.critical, scored.duty_at_risk)


def policy_picks(scored: Scored, settings: Settings, rng: np.random.Generator) -> np.ndarray:
    """Red as `serving.decide` decides it: the inspections of the lane policy."""
    assert scored.model is not None
    decided = decide(
        scored.model, scored.period[DECLARATION_FIELDS], reasons="none", policy=scaled_policy(scored, settings)
    )
    return decided["lane"].to_numpy() == "red"


# What the exploration rule learns labels of (models.exploration): the finest combination of what
# is declared, from where and taxed how, then HS codes. Aimed at importers instead (the busiest,
# riskiest never inspected, then declarants) explore_5 and explore_10 reached 0.672 and 0.663 mean
# precision (0.714 and 0.704 over the last 12 periods) against 0.675 and 0.674 (0.705, 0.724).
EXPLORED = ENTITIES_BY_NAME["route_hs6_tax"]
EXPLORED_BACKOFF = "hs6"


def explore_picks(share: float) -> Callable[[Scored, Settings, np.random.Generator], np.ndarray]:
    """`share` of the inspections by the exploration rule (models.exploration), the rest by risk."""

    def picks(scored: Scored, settings: Settings, rng: np.random.Generator) -> np.ndarray:
        budget = round(settings.inspection_rate * len(scored.risk))
        explored = round(share * budget)
        by_risk = top(scored.risk, budget - explored)
        counts = scored.counts
        return by_risk | exploration_picks(
            entity_keys(scored.period, EXPLORED).to_numpy(),
            counts[f"{EXPLORED.name}__inspected_count"],
            counts[f"{EXPLORED.name}__declarations"],
            counts[f"{EXPLORED_BACKOFF}__inspected_count"],
            scored.risk,
            explored,
            by_risk,
        )

    return picks


def risk_picks(scored: Scored, settings: Settings, rng: np.random.Generator) -> np.ndarray:
    return top(scored.risk, round(settings.inspection_rate * len(scored.risk)))


def random_picks(scored: Scored, settings: Settings, rng: np.random.Generator) -> np.ndarray:
    count = round(settings.inspection_rate * len(scored.period))
    picks = np.zeros(len(scored.period), dtype=bool)
    picks[rng.choice(len(scored.period), size=count, replace=False)] = True
    return picks


@dataclass(frozen=True)
class Strategy:
    name: str
    learner: str  # strategies of one learner share its knowledge and its model
    picks: Callable[[Scored, Settings, np.random.Generator], np.ndarray]
    teaches: bool  # its inspections are what its learner learns from


def strategies(settings: Settings) -> list[Strategy]:
    """CONTRACT section 2's strategies. `risk_only` and `explore_0` are the same selection by
    definition (0% exploration, the rest by risk): computed once, reported under both names."""
    out = [
        Strategy("policy", "policy", policy_picks, True),
        Strategy("risk_only", "risk_only", risk_picks, True),
        Strategy("random", "random", random_picks, True),
        Strategy("policy_fully_labelled", "fully_labelled", policy_picks, False),
        Strategy("risk_only_fully_labelled", "fully_labelled", risk_picks, False),
    ]
    for share in settings.exploration_sweep:
        name = f"explore_{round(share * 100)}"
        if share == 0:
            continue  # = risk_only
        out.append(Strategy(name, name, explore_picks(share), True))
    return [strategy for strategy in out if not settings.only or strategy.name in settings.only]


def period_figures(period: pd.DataFrame, picks: np.ndarray) -> dict:
    fraud = period["fraud"].to_numpy(dtype="float64") == 1
    critical = period["critical_fraud"].to_numpy(dtype="float64") == 1
    duty = declared_duty(period) * fraud
    hits = int((picks & fraud).sum())

    def share(part: float, whole: float) -> float:
        return float(part / whole) if whole else float("nan")

    return {
        "declarations": len(period),
        "inspected": int(picks.sum()),
        "hits": hits,
        "frauds": int(fraud.sum()),
        "precision": share(hits, picks.sum()),
        "recall": share(hits, fraud.sum()),
        "duty_recall": share(duty[picks].sum(), duty.sum()),
        "critical_recall": share((picks & critical).sum(), critical.sum()),
    }


def periods_of(history: pd.DataFrame, start: pd.Timestamp, days: int) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    last = history["declaration_date"].max()
    bounds = pd.date_range(start, last + pd.Timedelta(days=days), freq=f"{days}D")
    return [(a, b) for a, b in itertools.pairwise(bounds) if a <= last]


def simulate(
    history: pd.DataFrame, settings: Settings, progress: Callable[[str], None] = lambda _: None
) -> tuple[pd.DataFrame, dict]:
    """Every strategy over every period: the periods table and the summary."""
    history = history.sort_values(["declaration_date", "declaration_id"], kind="stable").reset_index(drop=True)
    start = pd.Timestamp(settings.start)
    if not (history["declaration_date"] < start).any():
        raise ValueError(f"no declaration is dated before --start {settings.start}: nothing to learn from first")
    periods = periods_of(history, start, settings.period_days)
    if not periods:
        raise ValueError(f"no declaration is dated on or after --start {settings.start}: nothing to replay")
    plan = strategies(settings)
    knowledge = {s.learner: Knowledge.initial(history, start) for s in plan}
    fully = knowledge.get("fully_labelled")
    if fully is not None:
        fully.revealed[:] = True  # its period's labels are not in what its model reads
    rng = np.random.default_rng(settings.seed)
    rows: list[dict] = []
    # what each strategy's learner has an outcome of: the importer (the yardstick) and
    # the combination fraud follows (EXPLORED)
    known_keys = dict(zip(KNOWN_KINDS, (history["importer_id"], entity_keys(history, EXPLORED))))
    coverage = {s.name: Coverage() for s in plan}
    started = time.perf_counter()
    for number, (first, end) in enumerate(periods, 1):
        scored: dict[str, Scored] = {}
        in_period = ((history["declaration_date"] >= first) & (history["declaration_date"] < end)).to_numpy()
        truth = history[in_period].reset_index(drop=True)
        last_day = end - pd.Timedelta(days=1)  # when the period's revealed outcomes are known
        fraud = truth["fraud"].to_numpy(dtype="float64") == 1
        # per learner, which of the period's keys it had an outcome of on the first day; what its
        # strategies reveal of this period is dated after that, so once per learner is exact
        known: dict[str, dict[str, np.ndarray]] = {}
        for strategy in plan:
            learner = knowledge[strategy.learner]
            if strategy.learner not in scored:
                scored[strategy.learner] = (
                    _unscored(truth) if strategy.learner == "random" else score_period(learner, truth, first, settings)
                )
            period = scored[strategy.learner]
            picks = strategy.picks(period, settings, rng)
            figures = period_figures(truth, picks)  # the period's real outcomes, hidden from its model
            rows.append(
                {
                    "strategy": strategy.name,
                    "period_start": first.date(),
                    "period_end": last_day.date(),
                    **figures,
                }
            )
            if strategy.learner not in known:
                known[strategy.learner] = {
                    kind: keys[in_period].isin(learner.known(keys, first)).to_numpy()
                    for kind, keys in known_keys.items()
                }
            coverage[strategy.name].add(known[strategy.learner], picks, fraud)
            if strategy.teaches:
                learner.reveal(np.flatnonzero(in_period)[picks], last_day)
        if fully is not None:
            fully.known_on[in_period] = np.datetime64(last_day.date(), "D")
        progress(f"period {number}/{len(periods)} {first.date()}..{last_day.date()}")
    table = pd.DataFrame(rows, columns=PERIOD_COLUMNS)
    if 0.0 in settings.exploration_sweep and "risk_only" in coverage:
        table = pd.concat(
            [table, table[table["strategy"] == "risk_only"].assign(strategy="explore_0")], ignore_index=True
        )
        coverage["explore_0"] = coverage["risk_only"]
    return table, summarize(table, coverage, settings, len(periods), time.perf_counter() - started)


def _unscored(period: pd.DataFrame) -> Scored:
    empty = np.zeros(len(period))
    return Scored(period, None, empty, empty, empty, {})


def summarize(
    table: pd.DataFrame,
    coverage: dict[str, Coverage],
    settings: Settings,
    periods: int,
    seconds: float,
) -> dict:
    strategies_summary = {}
    for name, rows in table.groupby("strategy", sort=False):
        rows = rows.sort_values("period_start")
        last = rows.tail(LAST_PERIODS)
        strategies_summary[name] = {
            "mean": {figure: _mean(rows[figure]) for figure in FIGURES},
            f"mean_last_{LAST_PERIODS}": {figure: _mean(last[figure]) for figure in FIGURES},
            **coverage[name].summary(),
            "inspected": int(rows["inspected"].sum()),
            "hits": int(rows["hits"].sum()),
        }
    return {
        "settings": {
            "start": settings.start,
            "period_days": settings.period_days,
            "inspection_rate": settings.inspection_rate,
            "boosting_rounds": {"fraud": settings.rounds, "critical_fraud": settings.critical_rounds},
            "boosting_rounds_note": "fixed per period, fewer than the pipeline's early-stopped count, so the run fits in minutes",
            "exploration_sweep": list(settings.exploration_sweep),
            "seed": settings.seed,
        },
        "periods": periods,
        "seconds": round(seconds, 1),
        "strategies": strategies_summary,
    }


def _mean(values: pd.Series) -> float | None:
    values = values.dropna()
    return round(float(values.mean()), 4) if len(values) else None


def write_outputs(table: pd.DataFrame, summary: dict, output: Path) -> list[Path]:
    """periods.csv, summary.json and simulation.png (precision and duty recall per period)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    output.mkdir(parents=True, exist_ok=True)
    table.to_csv(output / "periods.csv", index=False)
    (output / "summary.json").write_text(json.dumps(summary, indent=1))
    fig, axes = plt.subplots(2, 1, figsize=(11, 8), sharex=True)
    for name, rows in table.groupby("strategy", sort=False):
        style = "--" if name.endswith("fully_labelled") else ":" if name == "random" else "-"
        for ax, figure in zip(axes, ("precision", "duty_recall")):
            ax.plot(pd.to_datetime(rows["period_start"]), rows[figure], style, marker=".", label=name)
    axes[0].set_ylabel("precision (hits / inspected)")
    axes[1].set_ylabel("duty recall")
    axes[1].set_xlabel("period start")
    axes[0].legend(fontsize=8, ncol=3)
    rate = summary["settings"]["inspection_rate"]
    axes[0].set_title(f"Closed-loop replay: {summary['periods']} periods, {rate:.0%} inspected")
    fig.tight_layout()
    fig.savefig(output / "simulation.png", dpi=110)
    plt.close(fig)
    return [output / "periods.csv", output / "summary.json", output / "simulation.png"]


def read_history(paths: list[Path]) -> pd.DataFrame:
    """Declarations from files ingest takes: the KCS export (its column names) or canonical
    history (CSV or Parquet); rows that fail validation are counted and left out."""
    from features.adapters import KCS, read_source
    from features.schema import LABELLED, check_declarations

    frames = []
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file")
        if path.suffix == ".parquet":
            frame = pd.read_parquet(path).astype("string").astype(object)
        else:
            header = pd.read_csv(path, nrows=0).columns
            frame = read_source(path, KCS) if set(KCS.columns) <= set(header) else pd.read_csv(path, dtype=str)
        checked = check_declarations(frame, LABELLED)
        rejected = len(frame) - len(checked.valid)
        print(
            f"simulate: {path}: {len(checked.valid):,} declarations"
            + (f", {rejected:,} invalid left out" if rejected else "")
        )
        frames.append(checked.valid)
    history = pd.concat(frames, ignore_index=True)
    return history.drop_duplicates("declaration_id", keep="last").reset_index(drop=True)


def settings_from_params(params: dict, **overrides) -> Settings:
    """The run's settings from params.yaml (`simulate`, `train`, `features`, `serving`); an
    override of None keeps the file's value."""
    serving = params["serving"]
    values = {
        **{name: params["simulate"][name] for name in SIMULATE_KEYS},
        "smoothing": params["features"]["smoothing"],
        "train_params": params["train"],
        "shares": LaneShares.from_params(serving),
        "exploration_key": serving["exploration_key"],
    }
    values.update({key: value for key, value in overrides.items() if value is not None})
    return Settings(**values)


SIMULATE_KEYS = ("start", "period_days", "inspection_rate", "rounds", "critical_rounds", "seed")


def print_table(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"simulate: {summary['periods']} periods, {summary['settings']['inspection_rate']:.0%} inspected"
    )
    table.add_column("strategy", no_wrap=True)
    for column in (
        "precision",
        f"last {LAST_PERIODS}",
        "recall",
        "duty\nrecall",
        "critical\nrecall",
        "importer\nknown",
        "combination\nknown",
    ):
        table.add_column(column, justify="right", no_wrap=True)

    def shown(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    for name, figures in summary["strategies"].items():
        mean = figures["mean"]
        table.add_row(
            name,
            shown(mean["precision"]),
            shown(figures[f"mean_last_{LAST_PERIODS}"]["precision"]),
            shown(mean["recall"]),
            shown(mean["duty_recall"]),
            shown(mean["critical_recall"]),
            shown(figures["importer_known_share"]),
            shown(figures["combination_known_share"]),
        )
    # a narrower terminal would cut the strategy names the table is read by: lines wrap instead
    Console(width=max(Console().width, TABLE_WIDTH)).print(table)


def log_run(summary: dict, outputs: list[Path]) -> str:
    """The run in MLflow's `simulation` experiment: settings, mean figures, the three files."""
    import mlflow

    mlflow.set_experiment("simulation")
    with mlflow.start_run() as run:
        flat = {key: value for key, value in summary["settings"].items() if key != "boosting_rounds_note"}
        mlflow.log_params(
            {key: json.dumps(value) if isinstance(value, dict | list) else value for key, value in flat.items()}
        )
        for name, figures in summary["strategies"].items():
            for window in ("mean", f"mean_last_{LAST_PERIODS}"):
                for figure, value in figures[window].items():
                    if value is not None:
                        mlflow.log_metric(f"{name}.{window}.{figure}", value)
            for kind in KNOWN_KINDS:
                mlflow.log_metric(f"{name}.{kind}_known_share", figures[f"{kind}_known_share"] or 0.0)
        for path in outputs:
            mlflow.log_artifact(str(path))
        return run.info.run_id


def simulate_command(
    inputs: list[Path] = typer.Option(
        None,
        "--input",
        help="a history file ingest takes (KCS export or canonical), repeatable; default params.yaml ingest.sources",
    ),
    start: str | None = typer.Option(
        None, "--start", help="labelled up to this day (default: params.yaml simulate.start)"
    ),
    period_days: int | None = typer.Option(
        None, "--period-days", help="days in a period (default: simulate.period_days)"
    ),
    inspection_rate: float | None = typer.Option(
        None, "--inspection-rate", help="share inspected (default: simulate.inspection_rate)"
    ),
    output: Path = typer.Option(Path("reports/simulation"), "--output", help="folder for the CSV, JSON and PNG"),
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="the knobs (train, serving, simulate)"),
) -> None:
    """Closed-loop replay of history as a center lives it (docs/loop.md): period by period, train
    on what is known, score the period, inspect a share of it, reveal only those labels."""
    import yaml
    from rich.progress import Progress

    from serving.settings import Settings as StoreSettings
    from serving.settings import use_stores

    if inspection_rate is not None and not 0 < inspection_rate <= 1:
        raise typer.BadParameter(f"expected a share in (0, 1], got {inspection_rate}", param_hint="--inspection-rate")
    if period_days is not None and period_days < 1:
        raise typer.BadParameter(f"expected at least 1 day, got {period_days}", param_hint="--period-days")
    if start is not None:
        try:
            pd.Timestamp(start)
        except ValueError:
            raise typer.BadParameter(f"expected YYYY-MM-DD, got {start!r}", param_hint="--start") from None
    try:
        params = yaml.safe_load(params_file.read_text())
        settings = settings_from_params(params, start=start, period_days=period_days, inspection_rate=inspection_rate)
        history = read_history(list(inputs or []) or [Path(source) for source in params["ingest"]["sources"]])
        with Progress(transient=True) as bar:
            task = bar.add_task(
                "simulate", total=len(periods_of(history, pd.Timestamp(settings.start), settings.period_days))
            )
            table, summary = simulate(
                history, settings, progress=lambda text: bar.update(task, advance=1, description=text)
            )
    except (OSError, ValueError, KeyError) as problem:
        typer.echo(f"simulate: nothing simulated: {problem}", err=True)
        raise typer.Exit(2) from None
    outputs = write_outputs(table, summary, output)
    print_table(summary)
    use_stores(StoreSettings.from_environment())
    run_id = log_run(summary, outputs)
    typer.echo(
        f"simulate: wrote {', '.join(str(path) for path in outputs)}; MLflow run {run_id} (experiment simulation)"
    )
