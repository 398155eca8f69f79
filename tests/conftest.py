"""Shared fixtures: a small real sample of the KCS history, a migrated MLflow store, and a Dask
LocalCluster of two worker processes on loopback (featurize's and training's cluster tests)."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import models  # noqa: F401 - first: it sets OMP_WAIT_POLICY before LightGBM loads OpenMP

# isort: split
import numpy as np
import pandas as pd
import pytest

from features.adapters import KCS, SOURCE_FIELDS, read_source
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

# Unit tests that take a second or more of CPU each (measured per test on 2 cores), marked `slow`
# here so that `make test-unit` and `make check` stay under a minute; `make test` runs them too. A
# file's path marks every test in it, path::name one test (all its parameters). Everything under
# tests/e2e/ is `e2e`. A renamed test drops out of this list with a warning.
SLOW = {
    # a Dask LocalCluster of worker processes; the real stages in subprocesses
    "tests/features/test_cluster.py",
    "tests/models/test_cluster_training.py",
    "tests/bench/test_scale.py",
    "tests/serving/test_settings.py::test_score_in_a_checkout_without_environment_uses_its_bentoml_store_and_says_what_to_run",
    "tests/serving/test_report.py::test_the_command_writes_the_report_and_leaves_the_store_alone",
    # closed-loop replays: featurize and train per period
    "tests/serving/test_simulation.py",
    # property tests of hundreds of examples, and whole-history runs
    "tests/features/test_schema_requests.py::test_any_batch_gets_the_same_verdict_and_failures_both_ways",
    "tests/features/test_schema_requests.py::test_what_the_service_lets_through_is_checked_without_pandera",
    "tests/features/test_schema_requests.py::test_json_objects_are_checked_as_their_frame_would_be",
    "tests/serving/test_openapi.py::test_the_document_and_the_service_agree_on_every_declaration",
    "tests/serving/test_openapi.py::test_the_document_is_valid_openapi",
    "tests/pipelines/test_quarantine.py::test_every_row_is_valid_quarantined_or_a_dropped_repeat",
    "tests/pipelines/test_validate.py::test_accounting_holds_for_any_mix",
    "tests/pipelines/test_validate.py::test_checking_a_few_rows_at_a_time_gives_the_one_chunk_result",
    "tests/pipelines/test_validate.py::test_a_history_with_declarations_nobody_inspected_validates",
    "tests/features/test_partitioned.py::test_streamed_features_equal_the_in_memory_ones",
    "tests/features/test_history_and_matrix.py::test_row_order_never_changes_features",
    "tests/features/test_history_and_matrix.py::test_labels_and_fields_of_the_same_day_or_later_never_reach_a_row",
    "tests/models/test_lanes.py::test_without_ties_every_source_takes_its_share_to_one_declaration",
    "tests/models/test_lanes.py::test_raising_any_score_never_lowers_a_lane",
    "tests/models/test_metrics.py::test_every_metric_is_within_zero_and_one",
    "tests/models/test_metrics.py::test_a_perfect_ranking_has_the_best_precision_possible",
    "tests/models/test_metrics.py::test_a_reversed_ranking_has_the_worst_precision_possible",
    "tests/models/test_training_and_bundle.py::test_only_inspected_rows_are_learned_from_and_every_validation_row_is_scored",
    "tests/models/test_training_and_bundle.py::test_a_booster_fed_from_the_parquet_matrix_equals_one_fed_from_memory",
    "tests/serving/test_decide.py::test_properties_the_strictest_override_wins_never_lower_and_order_does_not_matter",
    "tests/features/test_inspected_history.py::test_an_outcome_not_yet_known_never_reaches_a_feature",
    "tests/features/test_history_and_matrix.py::test_serving_matches_training_on_day_d",
    "tests/features/test_schema_identifiers.py::test_every_single_character_change_is_caught_but_the_ones_iso_6346_cannot_see",
    "tests/pipelines/test_quarantine.py::test_a_corrupted_history_yields_the_report_its_manifest_predicts",
    "tests/models/test_training_and_bundle.py::test_pyfunc_predict_equals_risk_model_score",  # logs and loads an MLflow model
    "tests/serving/test_alerts.py::test_matching_is_a_dictionary_lookup_per_identifier_whatever_the_number_of_alerts",
    "tests/serving/test_report.py::test_prices_times_ten_flag_the_price_features",
    # a PostgreSQL server of its own, stopped and started again
    "tests/serving/test_audit.py::test_a_stopped_server_refuses_writes_and_is_reconnected_when_it_returns",
}


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config, items):
    matched, files = set(), set()
    for item in items:
        path, _, name = item.nodeid.partition("::")
        files.add(path)
        if path.startswith("tests/e2e/"):
            item.add_marker(pytest.mark.e2e)
        for key in (path, f"{path}::{name.split('[')[0]}"):
            if key in SLOW:
                item.add_marker(pytest.mark.slow)
                matched.add(key)
    for stale in sorted(key for key in SLOW - matched if key.split("::")[0] in files):
        warnings.warn(pytest.PytestWarning(f"tests/conftest.py SLOW names no test: {stale}"), stacklevel=1)


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


# --- Dask: features/cluster.py and models/cluster.py -----------------------------------------------

CLUSTER_WINDOW = ("2020-01-01", "2021-03-31")
CLUSTER_SMOOTHING = 10


@pytest.fixture(scope="session")
def dask_cluster():
    """A LocalCluster of two worker processes, one thread each, started once for both layers' tests."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def dask_client(dask_cluster):
    from features.cluster import connect

    client = connect(dask_cluster.scheduler_address)
    yield client
    client.close()


@pytest.fixture(scope="session")
def validated_parts(kcs_records, tmp_path_factory) -> Path:
    """The embedded history, typed, as three parts in no particular order."""
    records = kcs_records.drop(columns=SOURCE_FIELDS, errors="ignore")
    valid = records[records["origin_country"].ne("ZZ") & records["departure_country"].ne("ZZ")]
    typed = check_declarations(valid, LABELLED).valid.sample(frac=1, random_state=5).reset_index(drop=True)
    directory = tmp_path_factory.mktemp("validated")
    for number, part in enumerate(np.array_split(np.arange(len(typed)), 3)):
        typed.iloc[part].to_parquet(directory / f"part-{number:05d}.parquet", index=False)
    return directory


def featurize_parts(validated: Path, directory: Path, entities) -> pd.DataFrame:
    """`validated` featurized into `directory` (matrix/, state/) by `entities`; the matrix."""
    from features.partitioned import featurize_history

    featurize_history(
        validated,
        directory / "matrix",
        directory / "state",
        CLUSTER_WINDOW,
        CLUSTER_SMOOTHING,
        entities,
        part_rows=10_000,
    )
    return pd.read_parquet(directory / "matrix")


@pytest.fixture(scope="session")
def local_features(validated_parts, tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """`validated_parts` featurized in this process: its directory and its matrix."""
    from features.partitioned import local_entities

    directory = tmp_path_factory.mktemp("local")
    return directory, featurize_parts(validated_parts, directory, local_entities)
