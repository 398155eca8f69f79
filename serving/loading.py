"""Finding the packaged champion in the BentoML store: one loader for the service and the CLI."""

from __future__ import annotations

import os

import bentoml

from models.bundle import RiskModel

DEFAULT_MODEL_TAG = "customs-risk:latest"


def model_tag() -> str:
    return os.environ.get("RISK_MODEL_TAG", DEFAULT_MODEL_TAG)


def load_packaged(bento_model: bentoml.Model) -> RiskModel:
    return bentoml.mlflow.load_model(bento_model).unwrap_python_model().model
