"""A small model built end to end in-process (features -> boosters -> calibration -> lanes ->
RiskModel), then checked against independent computations: the booster itself, the contract's
result shape, save/load, validation and the MLflow pyfunc wrapper."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.models import infer_signature

from features.matrix import FEATURE_NAMES, serving_features, training_features
from features.schema import DECLARATION_FIELDS, RECORD, check_declarations
from models.bundle import (
    RESULT_COLUMNS,
    InvalidDeclarations,
    RiskModel,
    RiskPyfunc,
    result_records,
    score_declarations,
)
from models.lanes import LanePolicy, LaneShares
from models.registry import configure_tracking, use_experiment
from models.training import booster_params, fit_early_stopped, fit_target, refit_rounds

TRAIN_PARAMS = {
    "seed": 42,
    "learning_rate": 0.1,
    "num_leaves": 15,
    "min_data_in_leaf": 20,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "cat_smoothing": 10,
    "max_cat_to_onehot": 8,
    "max_rounds": 50,
    "early_stopping_rounds": 10,
}
KEY = "customs-risk-exploration"
SHARES = LaneShares(
    red_risk_share=0.03,
    red_value_share=0.01,
    red_critical_share=0.01,
    yellow_share=0.10,
    yellow_critical_share=0.03,
    exploration_share=0.01,
)
MAX_REASONS = 3


def build_model(history: pd.DataFrame) -> tuple[RiskModel, dict]:
    """What the train stage does, at toy size: the last ~20% of days are the validation window."""
    matrix, state = training_features(history, 10)
    dates = history["declaration_date"]
    days = np.sort(dates.unique())
    valid_start = days[int(len(days) * 0.8)]
    is_valid = (dates >= valid_start).to_numpy()
    is_train = ~is_valid
    fitted = {
        label: fit_target(matrix, history[label].to_numpy(), is_train, is_valid, TRAIN_PARAMS)
        for label in ("fraud", "critical_fraud")
    }
    risk, critical = fitted["fraud"].validation_scores, fitted["critical_fraud"].validation_scores
    lanes = LanePolicy.fit(SHARES, KEY, risk, critical, risk * matrix.loc[is_valid, "duty_exposure"].to_numpy())
    model = RiskModel(
        fitted["fraud"].booster,
        fitted["critical_fraud"].booster,
        fitted["fraud"].calibration,
        fitted["critical_fraud"].calibration,
        lanes,
        state,
        info={"training_window": "test", "validation_window": str(valid_start)[:10], "features": FEATURE_NAMES},
    )
    extra = {"is_train": is_train, "is_valid": is_valid, "matrix": matrix, "fitted": fitted}
    return model, extra


@pytest.fixture(scope="module")
def built(history):
    return build_model(history)


@pytest.fixture(scope="module")
def model(built) -> RiskModel:
    return built[0]


@pytest.fixture(scope="module")
def records(history) -> pd.DataFrame:
    """Typed canonical declarations, in a shuffled order and with a non-default index."""
    sample = history[DECLARATION_FIELDS].iloc[-300:].sample(frac=1, random_state=3)
    return sample.set_index(pd.Index(range(1000, 1300)))


@pytest.fixture(scope="module")
def scored(model, records) -> pd.DataFrame:
    return model.score(records, max_reasons=MAX_REASONS)


@pytest.fixture(scope="module")
def scored_all(model, records) -> pd.DataFrame:
    return model.score(records, max_reasons=MAX_REASONS, reasons="all")


@pytest.fixture(scope="module")
def features(model, records) -> pd.DataFrame:
    return serving_features(records, model.state)[0]


# --- training ----------------------------------------------------------------------------------


def test_booster_params_are_seeded_and_deterministic():
    params = booster_params(TRAIN_PARAMS)
    assert params["seed"] == 42 and params["deterministic"] is True and params["objective"] == "binary"
    assert not {"max_rounds", "early_stopping_rounds"} & set(params)
    assert params["num_leaves"] == 15


def test_early_stopping_keeps_the_best_round(built, history):
    extra = built[1]
    train, valid, y = extra["is_train"], extra["is_valid"], history["fraud"].to_numpy()
    x = extra["matrix"]
    early = fit_early_stopped(x[train], y[train], x[valid], y[valid], TRAIN_PARAMS)
    assert early.best_iteration == extra["fitted"]["fraud"].best_iteration
    assert 1 <= early.best_iteration <= TRAIN_PARAMS["max_rounds"]
    # stopped at most early_stopping_rounds after the best one
    assert early.current_iteration() <= early.best_iteration + TRAIN_PARAMS["early_stopping_rounds"]


def test_refit_rounds_scale_with_rows():
    assert refit_rounds(40, 800, 1000) == 50
    assert refit_rounds(0, 800, 1000) == 1
    assert refit_rounds(10, 0, 1000) >= 1


def test_validation_window_is_the_most_recent(history, built):
    is_train, is_valid = built[1]["is_train"], built[1]["is_valid"]
    dates = history["declaration_date"]
    assert dates[is_train].max() < dates[is_valid].min()
    assert 0.1 < is_valid.mean() < 0.35


def test_training_twice_gives_identical_predictions(history, model, records, scored, features):
    again, _ = build_model(history)
    assert again.fraud_booster.model_to_string() == model.fraud_booster.model_to_string()
    assert np.array_equal(again.fraud_booster.predict(features), model.fraud_booster.predict(features))
    assert np.array_equal(again.critical_booster.predict(features), model.critical_booster.predict(features))
    assert again.fraud_calibration == model.fraud_calibration
    assert again.lanes == model.lanes
    pd.testing.assert_frame_equal(again.score(records, max_reasons=MAX_REASONS), scored)


# --- RiskModel.score ---------------------------------------------------------------------------


def test_results_have_the_contract_columns_in_input_order(records, scored):
    assert list(scored.columns) == RESULT_COLUMNS
    assert len(scored) == len(records)
    assert scored["declaration_id"].tolist() == records["declaration_id"].astype(str).tolist()


def test_scores_lanes_and_selection_are_in_range(scored):
    for column in ("risk_score", "critical_score"):
        values = scored[column].to_numpy(dtype=float)
        assert np.all((values >= 0) & (values <= 1)), column
    assert set(scored["lane"]) <= {"red", "yellow", "green"}
    assert set(scored["selected_by"]) <= {"model", "value", "critical", "random"}
    assert scored["risk_score"].nunique() > 10  # a real model, not a constant


def test_scores_are_the_calibrated_booster_predictions(model, scored, features):
    """The booster's own prediction of the feature frame, bit for bit, whichever reasons."""
    risk = model.fraud_calibration(model.fraud_booster.predict(features, raw_score=True))
    critical = model.critical_calibration(model.critical_booster.predict(features, raw_score=True))
    np.testing.assert_array_equal(scored["risk_score"], risk)
    np.testing.assert_array_equal(scored["critical_score"], critical)


def test_risk_differs_from_the_contribution_sum_only_by_rounding(model, scored, features):
    """Scores once came from the sum of the contributions, which is the margin up to float
    rounding: the change is in the last bits, far below anything a lane threshold sees."""
    contributions = model.fraud_booster.predict(features, pred_contrib=True)
    from_sum = model.fraud_calibration(contributions.sum(axis=1))
    np.testing.assert_allclose(scored["risk_score"], from_sum, rtol=0, atol=1e-12)


def test_duty_at_risk_is_the_risk_times_the_declared_duty(records, scored):
    declared = records["item_price"].to_numpy(dtype=float) * records["tax_rate"].to_numpy(dtype=float) / 100
    np.testing.assert_allclose(scored["duty_at_risk"], scored["risk_score"] * declared, rtol=1e-12)


def test_lanes_follow_the_policy(model, scored):
    lane, selected_by = model.lanes.assign(
        scored["risk_score"], scored["critical_score"], scored["duty_at_risk"], scored["declaration_id"].tolist()
    )
    assert scored["lane"].tolist() == lane.tolist()
    assert scored["selected_by"].tolist() == selected_by.tolist()
    random = scored[scored["selected_by"] == "random"]
    assert (random["lane"] == "red").all()
    assert (random["risk_score"] < model.lanes.yellow_threshold).all()


def test_by_default_only_red_and_yellow_declarations_carry_reasons(model, records, scored, scored_all):
    """CONTRACT section 3: green `[]` unless "all" is asked; "none" gives none; the scores,
    lanes and selection never depend on which reasons were asked for."""
    carried = (scored["lane"] != "green").to_numpy()
    assert carried.any() and (~carried).any()
    assert all(reasons == [] for reasons in scored["reasons"][~carried])
    assert scored["reasons"][carried].tolist() == scored_all["reasons"][carried].tolist()
    assert any(scored["reasons"][carried])
    none = model.score(records, max_reasons=MAX_REASONS, reasons="none")
    assert all(reasons == [] for reasons in none["reasons"])
    for other in (scored_all, none):
        pd.testing.assert_frame_equal(other.drop(columns="reasons"), scored.drop(columns="reasons"), check_exact=True)


def test_an_unknown_reasons_choice_is_refused(model, records, declarations):
    with pytest.raises(ValueError, match="reasons must be one of selected, all, none"):
        model.score(records, MAX_REASONS, reasons="green")
    with pytest.raises(ValueError, match="reasons must be one of"):
        score_declarations(model, declarations, MAX_REASONS, reasons="")


def test_reasons_serialise_to_strict_json(scored):
    text = json.dumps(scored["reasons"].tolist(), allow_nan=False)
    assert json.loads(text) == scored["reasons"].tolist()


def test_max_reasons_is_respected(model, records):
    one = model.score(records.head(50), max_reasons=1, reasons="all")
    assert max(len(r) for r in one["reasons"]) == 1
    full = model.score(records.head(50), max_reasons=MAX_REASONS, reasons="all")
    for short, long in zip(one["reasons"], full["reasons"]):
        assert short == long[:1]


def test_a_batch_scores_each_row_as_if_alone(model, records, scored):
    single = pd.concat([model.score(records.iloc[[i]]) for i in (0, 17, 299)], ignore_index=True)
    pd.testing.assert_frame_equal(single, scored.iloc[[0, 17, 299]].reset_index(drop=True))
    red_or_yellow = np.flatnonzero(scored["lane"] != "green")[:5].tolist()
    alone = pd.concat([model.score(records.iloc[[i]]) for i in red_or_yellow], ignore_index=True)
    pd.testing.assert_frame_equal(alone, scored.iloc[red_or_yellow].reset_index(drop=True))


# --- save / load -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundle_dir(model, tmp_path_factory):
    directory = tmp_path_factory.mktemp("bundle") / "bundle"
    model.save(directory)
    return directory


def test_save_load_round_trip_gives_identical_scores(model, bundle_dir, records, scored):
    loaded = RiskModel.load(bundle_dir)
    assert loaded.lanes == model.lanes
    assert loaded.fraud_calibration == model.fraud_calibration
    assert loaded.critical_calibration == model.critical_calibration
    assert loaded.info == json.loads(json.dumps(model.info))
    assert loaded.state.history_end == model.state.history_end
    assert "path_contributions" in vars(loaded)  # the reasons' leaf table is built at load, not per request
    pd.testing.assert_frame_equal(loaded.score(records, max_reasons=MAX_REASONS), scored)


# --- validation and unseen categories ------------------------------------------------------------


def test_score_declarations_matches_score_on_client_records(model, declarations):
    results = score_declarations(model, declarations, MAX_REASONS)
    expected = model.score(check_declarations(declarations, RECORD).valid, MAX_REASONS)
    pd.testing.assert_frame_equal(results, expected)
    assert results["declaration_id"].tolist() == declarations["declaration_id"].tolist()


def test_json_objects_score_as_their_frame_does(model, declarations):
    """The service passes the objects a client sent, not a frame of them."""
    sent = declarations.astype(object).where(declarations.notna(), None).to_dict(orient="records")
    pd.testing.assert_frame_equal(
        score_declarations(model, sent, MAX_REASONS), score_declarations(model, declarations, MAX_REASONS)
    )


def test_result_records_are_the_frames_records(scored_all):
    assert result_records(scored_all) == scored_all.to_dict(orient="records")
    assert [type(v) for v in result_records(scored_all)[0].values()] == [
        type(v) for v in scored_all.to_dict(orient="records")[0].values()
    ]


def test_an_invalid_record_rejects_the_batch_with_index_and_field(model, declarations):
    bad = declarations.copy()
    bad.loc[2, "hs6_code"] = "12AB"
    bad.loc[4, "tax_rate"] = -5
    with pytest.raises(InvalidDeclarations) as raised:
        score_declarations(model, bad, MAX_REASONS)
    failures = raised.value.failures
    assert set(zip(failures["index"], failures["field"])) == {(2, "hs6_code"), (4, "tax_rate")}
    assert "row 2: hs6_code" in str(raised.value)
    assert "row 4: tax_rate" in str(raised.value)


def test_an_extra_field_is_rejected_not_dropped(model, declarations):
    extra = declarations.assign(colour="red")
    with pytest.raises(InvalidDeclarations) as raised:
        score_declarations(model, extra, MAX_REASONS)
    failures = raised.value.failures
    assert set(failures["field"]) == {"colour"}
    assert sorted(failures["index"]) == list(range(len(declarations)))


def test_a_missing_required_field_is_reported(model, declarations):
    with pytest.raises(InvalidDeclarations) as raised:
        score_declarations(model, declarations.drop(columns=["importer_id"]), MAX_REASONS)
    assert set(raised.value.failures["field"]) == {"importer_id"}


def test_unseen_importer_and_hs_code_are_scored(model, history, declarations):
    new = declarations.copy()
    new.loc[0, "importer_id"] = "NEWIMPORTER01"
    new.loc[0, "declarant_id"] = "NEWDECLARANT01"
    new.loc[0, "hs6_code"] = "999999"
    new.loc[1, "seller_id"] = None
    new.loc[1, "courier_id"] = None
    assert "NEWIMPORTER01" not in set(history["importer_id"])
    assert "999999" not in set(history["hs6_code"])
    results = score_declarations(model, new, MAX_REASONS)
    assert len(results) == len(new)
    assert results[["risk_score", "critical_score"]].notna().all().all()
    assert results["risk_score"].between(0, 1).all()
    # the new importer is rated at the overall fraud rate of the fitted history
    x = serving_features(check_declarations(new, RECORD).valid, model.state)[0]
    assert x.loc[0, "importer_declarations"] == 0
    overall = (history["fraud"].sum() + 1) / (len(history) + 2)
    assert x.loc[0, "importer_fraud_rate"] == pytest.approx(overall)
    assert pd.isna(x.loc[0, "hs_chapter"])  # chapter 99 never seen: an unknown category
    for reason in results.loc[0, "reasons"]:
        if reason["feature"] == "importer_fraud_rate":
            assert "no earlier declarations" in reason["text"]


# --- MLflow pyfunc -------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_pyfunc_predict_equals_risk_model_score(mlflow_store, model, bundle_dir, declarations):
    configure_tracking()
    assert mlflow.get_tracking_uri() == mlflow_store
    use_experiment()
    expected = model.score(check_declarations(declarations, RECORD).valid, MAX_REASONS)
    expected["reasons"] = expected["reasons"].map(json.dumps)
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=RiskPyfunc(),
            artifacts={"bundle": str(bundle_dir)},
            pip_requirements=["lightgbm", "pandas"],
            # a params schema, or MLflow drops `max_reasons` at inference
            signature=infer_signature(declarations, expected, params={"max_reasons": MAX_REASONS}),
        )
    loaded = mlflow.pyfunc.load_model(info.model_uri)
    predicted = loaded.predict(declarations)
    pd.testing.assert_frame_equal(predicted.reset_index(drop=True), expected)
    assert [json.loads(r) for r in predicted["reasons"]] == model.score(
        check_declarations(declarations, RECORD).valid, MAX_REASONS
    )["reasons"].tolist()
    # max_reasons travels as a param
    one = loaded.predict(declarations, params={"max_reasons": 1})
    assert max(len(json.loads(r)) for r in one["reasons"]) <= 1


def test_a_booster_fed_from_the_parquet_matrix_equals_one_fed_from_memory(history, tmp_path):
    """lgb.Sequence over row groups (the train stage at any scale) builds the same model as the
    in-memory frame: the same trees, so the same scores."""
    from features.partitioned import featurize_history
    from models.training import FeatureMatrix, fit_rounds

    history.to_parquet(tmp_path / "part-00000.parquet", index=False)
    (tmp_path / "validated").mkdir()
    (tmp_path / "part-00000.parquet").rename(tmp_path / "validated" / "part-00000.parquet")
    window = (str(history["declaration_date"].min().date()), str(history["declaration_date"].max().date()))
    featurize_history(tmp_path / "validated", tmp_path / "matrix", tmp_path / "state", window, 10, part_rows=900)
    matrix = FeatureMatrix(tmp_path / "matrix")
    assert len(matrix.parts) > 1 and matrix.rows == len(history)
    in_memory, _ = training_features(history, 10)
    labels = history["fraud"].to_numpy()
    from_parquet = fit_rounds(matrix.rows_between(0, matrix.rows), labels, TRAIN_PARAMS, 20)
    from_memory = fit_rounds(in_memory, labels, TRAIN_PARAMS, 20)
    assert from_parquet.model_to_string() == from_memory.model_to_string()
    np.testing.assert_array_equal(from_parquet.predict(in_memory), from_memory.predict(in_memory))


def test_only_inspected_rows_are_learned_from_and_every_validation_row_is_scored(history, tmp_path):
    """A history where most declarations were released uninspected (null labels): the streamed
    matrix (rows kept by position) and the in-memory frame learn the same model from the
    inspected rows only, and both score every validation row."""
    from features.partitioned import featurize_history
    from models.training import FeatureMatrix

    rng = np.random.default_rng(3)
    history = history.copy()
    uninspected = rng.random(len(history)) < 0.7
    history.loc[uninspected, ["fraud", "critical_fraud"]] = np.nan
    (tmp_path / "validated").mkdir()
    history.to_parquet(tmp_path / "validated" / "part-00000.parquet", index=False)
    window = (str(history["declaration_date"].min().date()), str(history["declaration_date"].max().date()))
    featurize_history(tmp_path / "validated", tmp_path / "matrix", tmp_path / "state", window, 10, part_rows=900)
    matrix = FeatureMatrix(tmp_path / "matrix")
    in_memory, _ = training_features(history, 10)
    labels = history["fraud"].to_numpy(dtype="float64")
    np.testing.assert_array_equal(matrix.column("fraud").astype("float64"), labels)
    dates = history["declaration_date"]
    is_valid = (dates >= dates.quantile(0.8)).to_numpy()
    streamed = fit_target(matrix.rows_between(0, matrix.rows), labels, ~is_valid, is_valid, TRAIN_PARAMS)
    held = fit_target(in_memory, labels, ~is_valid, is_valid, TRAIN_PARAMS)
    assert streamed.booster.model_to_string() == held.booster.model_to_string()
    assert len(held.validation_scores) == is_valid.sum()
    np.testing.assert_allclose(streamed.validation_scores, held.validation_scores, rtol=0, atol=1e-12)
    # the refit saw the inspected rows only: as many as a booster fed those rows alone
    alone = fit_target(
        in_memory[~uninspected], labels[~uninspected], ~is_valid[~uninspected], is_valid[~uninspected], TRAIN_PARAMS
    )
    assert alone.booster.model_to_string() == held.booster.model_to_string()


def test_a_matrix_part_that_cannot_be_used_is_named(tmp_path):
    from features.partitioned import HistoryFileError
    from models.training import FeatureMatrix

    (tmp_path / "part-00000.parquet").write_bytes(b"garbage")
    with pytest.raises(HistoryFileError, match=r"part-00000\.parquet: not a readable Parquet file"):
        FeatureMatrix(tmp_path)
    pd.DataFrame({"fraud": [0, 1]}).to_parquet(tmp_path / "part-00000.parquet")
    with pytest.raises(HistoryFileError, match=r"part-00000\.parquet: missing column\(s\) importer_declarations"):
        FeatureMatrix(tmp_path)
