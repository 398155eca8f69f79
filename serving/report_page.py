"""The report's page (`customs-risk report` writes it as OUTPUT/index.html): tables and plots of
the figures of serving.kpis that a targeting center's head reads."""

from __future__ import annotations

import base64
import html
import io
import math

import numpy as np
import pandas as pd

from serving.kpis import LANES, PSI_FLAG, SOURCES, is_hit

FEW_OUTCOMES = 30  # below this many outcomes a hit rate is shown as too few to mean anything


def _png(figure) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    return f'<img alt="" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def _figure(width: float = 8, height: float = 3):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def _number(value, kind: str = "rate") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if kind == "rate":
        return f"{value:.1%}"
    if kind == "psi":
        return f"{value:.3f}"
    return f"{value:,}"


def _table(header: list[str], body: list[list[str]], caption: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    lines = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in body)
    title = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f"<table>{title}<thead><tr>{head}</tr></thead><tbody>{lines}</tbody></table>"


def _duty_cell(value) -> str:
    return "–" if value is None else f"{value:,.0f}"


def _hit_cell(rate, outcomes: int) -> str:
    text = _number(rate)
    if outcomes == 0:
        return f'{text} <span class="few">(no outcomes)</span>'
    if outcomes < FEW_OUTCOMES:
        text += f' <span class="few">(only {outcomes} outcome{"s" if outcomes != 1 else ""}: too few)</span>'
    return text


def _weekly(rows: pd.DataFrame, column: str, values: tuple[str, ...]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hit rates and outcome counts by week (starting Monday) of declaration date."""
    reported = rows[rows["outcome"].notna()].copy()
    reported["week"] = pd.to_datetime(reported["declaration_date"]).dt.to_period("W-SUN").dt.start_time
    reported["hit"] = is_hit(reported["outcome"])
    grouped = reported[reported[column].isin(values)].groupby(["week", column])["hit"]
    return grouped.mean().unstack(column), grouped.size().unstack(column).fillna(0).astype(int)


def _weekly_section(rows: pd.DataFrame, column: str, values: tuple[str, ...], title: str) -> str:
    rates, counts = _weekly(rows, column, values)
    if rates.empty:
        return f"<h3>{title}</h3><p>No outcome is reported for this period yet.</p>"
    figure, axes = _figure()
    for value in rates.columns:
        style = {"color": "black", "linestyle": "--", "linewidth": 2} if value == "random" else {}
        axes.plot(rates.index, rates[value], marker="o", label=value, **style)
    axes.set_ylabel("hit rate")
    axes.set_ylim(0, 1)
    axes.legend()
    axes.set_title(title)
    figure.autofmt_xdate()
    body = []
    for week in rates.index:
        cells = [week.strftime("%Y-%m-%d")]
        for value in rates.columns:
            n = int(counts.loc[week, value])
            rate = None if n == 0 else float(rates.loc[week, value])
            cells.append(_hit_cell(rate, n) if n else "–")
        body.append(cells)
    return f"<h3>{title}</h3>{_png(figure)}" + _table(["week of", *map(str, rates.columns)], body)


def _weekly_shares(rows: pd.DataFrame, lanes: dict) -> str:
    """Each week's lane shares (from Monday, by declaration date) against the settings, and how
    the lane thresholds of its decisions were set: fixed thresholds let the shares move with the
    traffic, following ones hold them (docs/lanes.md)."""
    weeks = pd.to_datetime(rows["declaration_date"]).dt.to_period("W-SUN").dt.start_time
    body = []
    for week, decided in rows.groupby(weeks):
        shares = decided["lane"].value_counts(normalize=True)
        modes = decided["lane_thresholds"].fillna("not recorded").unique()
        cells = [_number(float(shares.get(lane, 0.0))) for lane in LANES]
        body.append([week.strftime("%Y-%m-%d"), _number(len(decided), "count"), *cells, ", ".join(sorted(modes))])
    body.append(["setting", "", *(_number(lanes[lane]["share_setting"]) for lane in LANES), ""])
    return "<h3>Lane shares by week</h3>" + _table(
        ["week of", "decisions", *LANES, "lane thresholds"],
        body,
        "lane thresholds: follow (each declaration's fitted on the last declarations scored) or fixed "
        "(fitted on the validation window), as each decision recorded",
    )


CSS = """
body{font-family:sans-serif;max-width:60em;margin:1em auto;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #bbb;padding:.2em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}
.few{color:#a60}.flag{color:#b00;font-weight:bold}caption{text-align:left;font-style:italic}
"""


def _approved(model: dict) -> str:
    """Who put the version into service and when, as the page's first lines name the model."""
    if not model.get("approved_by"):
        return ""
    return f", approved by {html.escape(str(model['approved_by']))} at {html.escape(str(model['approved_at']))}"


def render_html(figures: dict, rows: pd.DataFrame, notes: list[str]) -> str:
    """The page of `figures` (serving.kpis) for the period's decision `rows`, with `notes` on what
    could not be computed."""
    period = figures["period"]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Targeting report {period['since']} to {period['until']}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>Targeting report, {period['since']} to {period['until']}</h1>",
        f"<p>{figures['decisions']:,} declarations dated in the period (the latest decision of each), "
        f"model {html.escape(str(figures['model']['name']))} version {html.escape(str(figures['model']['version']))}"
        f"{_approved(figures['model'])}. "
        f"A hit is an inspection outcome of fraud or critical; cells with fewer than {FEW_OUTCOMES} outcomes are "
        "marked: too few to mean anything.</p>",
    ]
    parts += [f'<p class="few">{html.escape(note)}</p>' for note in notes]

    # decisions per day
    per_day = rows.groupby(["declaration_date", "lane"]).size().unstack("lane").reindex(columns=list(LANES)).fillna(0)
    figure, axes = _figure()
    bottom = np.zeros(len(per_day))
    colours = {"red": "#c33", "yellow": "#db3", "green": "#4a4"}
    for lane in LANES:
        axes.bar(pd.to_datetime(per_day.index), per_day[lane], bottom=bottom, color=colours[lane], label=lane)
        bottom += per_day[lane].to_numpy()
    axes.set_ylabel("decisions")
    axes.legend()
    axes.set_title("Decisions per day, by lane")
    figure.autofmt_xdate()
    parts.append(f"<h2>Decisions per day</h2>{_png(figure)}")

    # lanes
    ratio = figures["random_vs_targeted_hit_ratio"]
    lanes = figures["lanes"]
    body = [
        [
            lane,
            _number(v["decisions"], "count"),
            _number(v["share"]),
            _number(v["share_setting"]),
            _number(v["outcomes"], "count"),
            _hit_cell(v["hit_rate"], v["outcomes"]),
            _number(v["critical_found"], "count"),
            _duty_cell(v["additional_duty"]),
        ]
        for lane, v in lanes.items()
    ]
    parts.append(
        "<h2>Lanes</h2>"
        + _table(
            [
                "lane",
                "decisions",
                "share",
                "share setting",
                "outcomes",
                "hit rate",
                "critical frauds found",
                "additional duty",
            ],
            body,
            "share setting: the shares the champion's params set (random picks and analysts' rules add to red); "
            "additional duty: the sum of what the outcomes reported, – where none reported it",
        )
    )
    figure, axes = _figure(6, 2.5)
    x = np.arange(len(LANES))
    axes.bar(x - 0.2, [lanes[lane]["share"] or 0 for lane in LANES], 0.4, label="share")
    axes.bar(x + 0.2, [lanes[lane]["share_setting"] or 0 for lane in LANES], 0.4, label="setting")
    axes.set_xticks(x, LANES)
    axes.legend()
    axes.set_title("Lane shares against the settings")
    parts.append(_png(figure))
    parts.append(_weekly_shares(rows, lanes))

    # sources
    sources = figures["selected_by"]
    body = [
        [
            source,
            _number(v["decisions"], "count"),
            _number(v["outcomes"], "count"),
            _hit_cell(v["hit_rate"], v["outcomes"]),
        ]
        for source, v in sources.items()
    ]
    parts.append("<h2>Selection sources</h2>" + _table(["selected by", "decisions", "outcomes", "hit rate"], body))
    random_outcomes = sources["random"]["outcomes"]
    yardstick = (
        "no random pick has an outcome yet, so there is no yardstick"
        if ratio is None
        else (f"declarations not picked at random find fraud {ratio:.2f} times as often as the random picks")
    )
    if ratio is not None and random_outcomes < FEW_OUTCOMES:
        yardstick += f' <span class="few">(only {random_outcomes} random outcomes: too few to mean anything)</span>'
    parts.append(f"<p><b>Targeted against random:</b> {yardstick}.</p>")
    parts.append("<h2>Hit rate by week</h2><p>Random picks (dashed) are the unbiased yardstick.</p>")
    parts.append(_weekly_section(rows, "lane", LANES, "Hit rate per lane"))
    parts.append(_weekly_section(rows, "selected_by", SOURCES, "Hit rate per selection source"))

    # coverage
    body = []
    for lane in ("red", "yellow"):
        part = rows[rows["lane"] == lane]
        reported = part[part["outcome"].notna()]
        days = (
            pd.to_datetime(reported["received_at"], utc=True, format="ISO8601")
            - pd.to_datetime(reported["scored_at"], utc=True, format="ISO8601")
        ).dt.total_seconds() / 86400
        body.append(
            [
                lane,
                _number(len(part), "count"),
                _number(len(reported), "count"),
                _number(len(reported) / len(part) if len(part) else None),
                f"{days.median():.1f}" if len(days) else "–",
            ]
        )
    parts.append(
        "<h2>Outcome coverage</h2>"
        + _table(["lane", "decisions", "with an outcome", "coverage", "median days from decision to outcome"], body)
    )

    # drift
    drifted = figures["drift"]
    flagged = set(drifted["flagged"])
    items = [("risk_score", drifted["risk_score"]["psi"])] + [(n, v["psi"]) for n, v in drifted["features"].items()]
    ordered = sorted(items, key=lambda item: -1 if item[1] is None else item[1], reverse=True)
    body = [
        [html.escape(name), _number(value, "psi"), '<span class="flag">drifted</span>' if name in flagged else ""]
        for name, value in ordered
    ]
    parts.append(
        f"<h2>Drift against the validation window</h2><p>Population stability index; {PSI_FLAG} or more is "
        "flagged.</p>" + _table(["", "PSI", ""], body)
    )
    shown = [(name, value) for name, value in ordered if value is not None][:10]
    if shown:
        figure, axes = _figure(8, 0.3 * len(shown) + 1)
        axes.barh([name for name, _ in shown][::-1], [value for _, value in shown][::-1], color="#557")
        axes.axvline(PSI_FLAG, color="#b00", linestyle="--")
        axes.set_xlabel("PSI")
        axes.set_title("Most drifted")
        parts.append(_png(figure))
    parts.append("</body></html>")
    return "\n".join(parts)
