"""Shared fixtures: a small real sample of the KCS history, and a migrated MLflow store."""

from __future__ import annotations

import shutil
from pathlib import Path

import models  # noqa: F401 - first: it sets OMP_WAIT_POLICY before LightGBM loads OpenMP

# isort: split
import pandas as pd
import pytest

from features.adapters import KCS, read_source
from features.schema import DECLARATION_FIELDS, LABELLED, HistoryRules, check_declarations, history_rules

REPO = Path(__file__).resolve().parents[1]
RAW = REPO / "data" / "raw"
# History rules for the rule tests, with the embedded history's window and 500,000 t as the mass
# no consignment can reach.
HISTORY_RULES = history_rules(
    HistoryRules(
        run_date=pd.Timestamp("2021-06-30"),
        history_start=pd.Timestamp("2020-01-01"),
        max_net_mass_kg=5e8,
    )
)


@pytest.fixture(scope="session")
def kcs_records() -> pd.DataFrame:
    """The embedded history in canonical layout, values as read (strings)."""
    return pd.concat(
        [read_source(RAW / "df_syn_train_eng.csv", KCS), read_source(RAW / "df_syn_valid_eng.csv", KCS)],
        ignore_index=True,
    )


@pytest.fixture(scope="session")
def history(kcs_records) -> pd.DataFrame:
    """A typed, valid sample of 4,000 rows of history with its entities kept dense: the 1,500
    busiest importers' rows, so point-in-time features have real histories to test. The rows
    with the unknown country ZZ are valid too (issue 15) but left out, so the sample stays the
    fixed one the tests were written against."""
    valid = kcs_records[kcs_records["origin_country"].ne("ZZ") & kcs_records["departure_country"].ne("ZZ")]
    busiest = valid["importer_id"].value_counts().index[:1500]
    sample = valid[valid["importer_id"].isin(busiest)].sample(n=4000, random_state=7)
    typed = check_declarations(sample, LABELLED).valid
    return typed.sort_values(["declaration_date", "declaration_id"]).reset_index(drop=True)


@pytest.fixture
def declarations(history) -> pd.DataFrame:
    """A few declarations as a client sends them: canonical fields, strings and numbers."""
    sample = history[DECLARATION_FIELDS].tail(5).copy()
    sample["declaration_date"] = sample["declaration_date"].dt.strftime("%Y-%m-%d")
    return sample.reset_index(drop=True)


@pytest.fixture(scope="session")
def _migrated_mlflow_db(tmp_path_factory) -> Path:
    """Migrating a new sqlite store takes seconds: do it once, copy it per test."""
    import mlflow

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def mlflow_store(_migrated_mlflow_db, tmp_path, monkeypatch) -> str:
    """A fresh, already migrated MLflow tracking store for one test; returns its URI.

    MLflow's process-wide state (tracking/registry URI, active experiment, and the env vars it
    sets for them) is put back after the test, so nothing points later tests or their
    subprocesses at this test's deleted store."""
    import mlflow.tracking._model_registry.utils as registry_utils
    import mlflow.tracking._tracking_service.utils as tracking_utils
    import mlflow.tracking.fluent as fluent

    for name in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_REGISTRY_URI"):
        monkeypatch.setenv(name, "")  # remembers the original (maybe unset) value
        monkeypatch.delenv(name)
    for module, attribute in (
        (tracking_utils, "_tracking_uri"),
        (registry_utils, "_registry_uri"),
        (fluent, "_active_experiment_id"),
    ):
        monkeypatch.setattr(module, attribute, getattr(module, attribute, None), raising=False)
    path = tmp_path / "mlflow.db"
    shutil.copy(_migrated_mlflow_db, path)
    uri = f"sqlite:///{path}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    return uri
