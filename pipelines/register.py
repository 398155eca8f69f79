"""Stage register: a new registry version; `champion` moves only when it is at least as good."""

from __future__ import annotations

from models.registry import ChampionRule, configure_tracking, register_version
from pipelines.common import load_params, read_json, write_json
from pipelines.paths import MODEL_CARD, REGISTRATION, RUN
from pipelines.paths import TARGETING_METRICS as METRICS


def main() -> None:
    params = load_params()["register"]
    run = read_json(RUN)
    rule = ChampionRule(params["champion_metric"], tuple(params["guard_metrics"]), params["guard_tolerance"])
    configure_tracking()
    decision = register_version(
        run["model_uri"],
        params["model_name"],
        run["run_id"],
        read_json(METRICS),
        rule,
        model_card=MODEL_CARD.read_text(),
    )
    write_json(REGISTRATION, decision)
    print(f"register: {decision['name']} version {decision['version']} -> {decision['alias']} ({decision['reason']})")


if __name__ == "__main__":
    main()
