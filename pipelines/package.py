"""Stage package: the registry's champion into the BentoML store, and the scoring bento built.

The champion's files are fingerprinted (sha256 per file) as the registry holds them. The first
packaging of a registry version tags it with the fingerprint (`files_sha256`); every later one
must find the same files, and the service refuses to start on files that differ from it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import bentoml
import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from models.governance import Approval, recorded_champion
from models.lanes import FOLLOW, SCORES, SCORES_ARTIFACTS, ScoreWindow, threshold_mode
from models.registry import configure_tracking, run_parquet
from pipelines.common import load_params, read_json, write_json
from pipelines.paths import PACKAGE, REGISTRATION, VALIDATION_SCORES
from serving.loading import LANE_WINDOW, file_digests, tree_digest, verify_files
from serving.settings import BENTO_NAME, Settings, use_stores

SERVICE = "serving.service:CustomsRisk"
# params.yaml `serving` as the service and `customs-risk score` read it from the champion
SERVING_PARAMS = (
    "max_batch",
    "max_reasons",
    "timeout_seconds",
    "body_timeout_seconds",
    "drift_window",
    "lane_thresholds",
    "follow_window",
)
FILES_TAG = "files_sha256"


def registry_fingerprint(client: MlflowClient, name: str, version, digests: dict[str, str]) -> str:
    """The version's fingerprint; set on first packaging, compared on every later one."""
    fingerprint = tree_digest(digests)
    tagged = version.tags.get(FILES_TAG)
    if tagged is None:
        client.set_model_version_tag(name, version.version, FILES_TAG, fingerprint)
    elif tagged != fingerprint:
        raise SystemExit(
            f"package: {name} version {version.version}: its files in the registry are not the ones first "
            f"packaged ({FILES_TAG} {tagged}, now {fingerprint}); not packaging them"
        )
    return fingerprint


def validation_window(run_id: str, size: int) -> dict[str, np.ndarray]:
    """The last `size` out-of-sample scores of the champion's validation window, in date order,
    by score: where its lanes' window starts when they follow traffic. From its own run, not the
    checkout: the champion may be an earlier run than the one trained last."""
    artifact = f"{SCORES_ARTIFACTS}/{VALIDATION_SCORES.name}"
    try:
        window = ScoreWindow.latest(size, run_parquet(run_id, artifact, ["declaration_date", *SCORES]))
    except MlflowException as missing:
        raise SystemExit(
            f"package: the champion's run {run_id} holds no {artifact} (its evaluate stage logs it), so its "
            "lanes cannot follow traffic: retrain, or set serving.lane_thresholds: fixed"
        ) from missing
    return {name: window.scores[:, column] for column, name in enumerate(SCORES)}


def import_champion(name: str, serving: dict) -> bentoml.Model:
    """Import the champion once per registry version; the tag names the version it came from.
    Only the `champion` alias is packaged, with who approved it and when: what is served is what
    a reviewer approved (models.governance), and an alias moved in the MLflow UI is recorded first."""
    client = MlflowClient()
    version = recorded_champion(client, name, "the package stage")
    if version is None:
        raise SystemExit(f"package: no '{name}@champion' in the registry; run the register stage")
    follow = threshold_mode(serving["lane_thresholds"]) == FOLLOW
    window = {LANE_WINDOW: validation_window(version.run_id, int(serving["follow_window"]))} if follow else None
    tag = f"{name}:v{version.version}"
    with contextlib.suppress(bentoml.exceptions.NotFound):
        bentoml.models.delete(bentoml.models.get(tag).tag)
    metrics = client.get_run(version.run_id).data.metrics
    approval = Approval.of(version)
    with tempfile.TemporaryDirectory() as scratch:
        local = mlflow.artifacts.download_artifacts(f"models:/{name}/{version.version}", dst_path=scratch)
        digests = file_digests(Path(local))
        fingerprint = registry_fingerprint(client, name, version, digests)
        model = bentoml.mlflow.import_model(
            tag,
            local,
            labels={"registry_version": str(version.version), "stage": "champion"},
            custom_objects=window,
            metadata={
                "name": name,
                "version": str(version.version),
                "run_id": version.run_id,
                "validation_metrics": metrics,
                "approval": approval.tags() if approval else None,
                "serving": {key: serving[key] for key in SERVING_PARAMS},
                FILES_TAG: fingerprint,
                "files": digests,
            },
        )
    verify_files(model)
    return model


def main() -> None:
    # the store the service and `customs-risk` read: BENTOML_HOME, else this checkout's .bentoml
    # (BentoML's own default, ~/bentoml, would leave the new champion where they never look)
    use_stores(Settings.from_environment())
    params = load_params()
    read_json(REGISTRATION)  # the stage runs after register, on its decision
    configure_tracking()
    name = params["register"]["model_name"]
    model = import_champion(name, params["serving"])
    bento = bentoml.build(
        SERVICE,
        name=BENTO_NAME,
        include=["features/*.py", "models/*.py", "serving/*.py", "serving/risk_profiles.yaml"],
        python={"requirements_txt": "requirements.lock", "lock_packages": False},  # the pins make install uses
        labels={"model": str(model.tag)},
        args={"model_tag": str(model.tag)},
    )
    write_json(PACKAGE, {"model": str(model.tag), "bento": str(bento.tag), FILES_TAG: model.info.metadata[FILES_TAG]})
    print(
        f"package: model {model.tag} ({FILES_TAG} {model.info.metadata[FILES_TAG][:12]}) -> bento {bento.tag} "
        f"in {os.environ.get('BENTOML_HOME', '~/bentoml')}"
    )


if __name__ == "__main__":
    main()
