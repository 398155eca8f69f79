"""Stage package: the registry's champion into the BentoML store, and the scoring bento built."""

from __future__ import annotations

import os
from pathlib import Path

import bentoml
from mlflow import MlflowClient

from models.registry import champion, configure_tracking
from pipelines.common import load_params, read_json, write_json

REGISTRATION = Path("data/model/registration.json")
PACKAGE = Path("data/model/package.json")
SERVICE = "serving.service:CustomsRisk"


def import_champion(name: str, serving: dict) -> bentoml.Model:
    """Import the champion once per registry version; the tag names the version it came from."""
    version = champion(name)
    if version is None:
        raise SystemExit(f"package: no '{name}@champion' in the registry; run the register stage")
    tag = f"{name}:v{version.version}"
    try:
        existing = bentoml.models.get(tag)
        bentoml.models.delete(existing.tag)
    except bentoml.exceptions.NotFound:
        pass
    metrics = MlflowClient().get_run(version.run_id).data.metrics
    return bentoml.mlflow.import_model(
        tag,
        f"models:/{name}/{version.version}",
        labels={"registry_version": str(version.version), "stage": "champion"},
        metadata={
            "name": name,
            "version": str(version.version),
            "run_id": version.run_id,
            "validation_metrics": metrics,
            "serving": {key: serving[key] for key in ("max_batch", "max_reasons")},
        },
    )


def main() -> None:
    params = load_params()
    read_json(REGISTRATION)  # the stage runs after register, on its decision
    configure_tracking()
    name = params["register"]["model_name"]
    model = import_champion(name, params["serving"])
    os.environ["RISK_MODEL_TAG"] = str(model.tag)
    bento = bentoml.build(
        SERVICE,
        name="customs-risk-service",
        include=["features/*.py", "models/*.py", "serving/*.py"],
        python={"packages": ["customs-risk"], "lock_packages": False},
        labels={"model": str(model.tag)},
    )
    write_json(PACKAGE, {"model": str(model.tag), "bento": str(bento.tag)})
    print(f"package: model {model.tag} -> bento {bento.tag}")


if __name__ == "__main__":
    main()
