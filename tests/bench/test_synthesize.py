"""The synthetic history must be valid canonical data, reproducible, written in bounded parts,
shaped like a national service's traffic, and carry fraud patterns a model can find."""

from __future__ import annotations

import itertools

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from bench.synthesize import Cardinalities, blocks, main
from features.adapters import SOURCE_FIELDS
from features.matrix import FEATURE_NAMES, training_features
from features.schema import (
    HS_CHAPTERS,
    LABELLED,
    LABELLED_FIELDS,
    OPTIONAL_FIELDS,
    check_declarations,
)
from pipelines.common import part_path


def synthesize(rows: int, seed: int, block_rows: int = 1_000_000) -> pd.DataFrame:
    return pd.concat(blocks(rows, seed, block_rows), ignore_index=True)


@pytest.fixture(scope="module")
def large() -> pd.DataFrame:
    return synthesize(200_000, seed=5, block_rows=60_000)


def test_same_seed_same_rows_other_seed_other_rows():
    first, again, other = synthesize(5_000, seed=1), synthesize(5_000, seed=1), synthesize(5_000, seed=2)
    pd.testing.assert_frame_equal(first, again)
    assert not first["importer_id"].equals(other["importer_id"])
    assert not first["fraud"].equals(other["fraud"])


def test_rows_are_valid_canonical_records_in_their_canonical_types():
    records = synthesize(3_000, seed=4)
    as_sent = records.astype({"declaration_date": "str"}).astype(object).where(records.notna(), None)
    checked = check_declarations(as_sent, LABELLED)
    assert checked.failures.empty
    typed = checked.valid
    assert list(records.columns) == LABELLED_FIELDS
    pd.testing.assert_frame_equal(typed, records, check_dtype=True)


def test_as_ingested_the_rows_are_text_the_validate_stage_parses_back_to_the_same_records(tmp_path):
    output = tmp_path / "interim"
    main(
        ["--rows", "2500", "--seed", "3", "--output", str(output), "--block-rows", "1000", "--ingested-as", "synthetic"]
    )
    interim = pd.read_parquet(output)
    assert list(interim.columns) == LABELLED_FIELDS + SOURCE_FIELDS
    assert (interim["source_file"] == "synthetic").all() and interim["source_row"].tolist() == list(range(1, 2501))
    as_read = interim[LABELLED_FIELDS].astype(object).where(interim.notna(), None)
    checked = check_declarations(as_read, LABELLED)
    assert checked.failures.empty
    typed = checked.valid
    pd.testing.assert_frame_equal(typed, synthesize(2_500, seed=3, block_rows=1_000), check_dtype=True)


def test_time_order_unique_ids_and_nulls_where_the_contract_allows(large):
    assert large["declaration_id"].is_unique
    assert large["declaration_date"].is_monotonic_increasing  # across blocks too
    assert large["declaration_date"].min() == pd.Timestamp("2020-01-01")
    assert large["declaration_date"].max() >= pd.Timestamp("2021-12-01")  # well over 18 months
    assert large.drop(columns=[*OPTIONAL_FIELDS, "additional_duty", "inspected_on"]).notna().all().all()
    # the duty assessed: reported for about half, 0 for clean declarations, more for undervaluations
    reported = large[large["additional_duty"].notna()]
    assert 0.45 < len(reported) / len(large) < 0.55
    assert (reported.loc[reported["fraud"] == 0, "additional_duty"] == 0).all()
    assert (reported.loc[reported["fraud"] == 1, "additional_duty"] > 0).mean() > 0.6  # duty-free goods: 0
    assert large[["container_number", "bill_of_lading"]].isna().all().all()  # not declared, as in KCS
    assert 0.05 < large["seller_id"].isna().mean() < 0.15 and 0.7 < large["courier_id"].isna().mean() < 0.9
    assert ((large["critical_fraud"] == 0) | (large["fraud"] == 1)).all()


def test_cardinalities_and_skew_of_a_national_service(large):
    assert large["importer_id"].nunique() > 10_000
    assert large["hs6_code"].nunique() > 2_000
    assert large["hs6_code"].str.fullmatch(r"\d{6}").all()
    assert large["hs6_code"].str[:2].isin(HS_CHAPTERS).all()  # none in reserved chapter 77
    busiest = large["importer_id"].value_counts()
    top_share = busiest.head(len(busiest) // 100).sum() / len(large)
    assert 0.2 < top_share < 0.6  # Zipf-like: the top 1% of importers file a large share
    assert 0.15 < large["fraud"].mean() < 0.3 and 0.003 < large["critical_fraud"].mean() < 0.03


def test_entity_counts_keep_growing_to_a_national_history_but_hs_codes_stay_within_the_nomenclature():
    sizes = [Cardinalities.for_rows(rows) for rows in (1_000_000, 10_000_000, 25_000_000)]
    for smaller, larger in itertools.pairwise(sizes):
        assert larger.importers > smaller.importers and larger.sellers > smaller.sellers
        assert larger.declarants > smaller.declarants
    national = sizes[-1]
    assert 200_000 <= national.importers <= 800_000
    assert 10_000 <= national.declarants < 100_000 and 10_000 <= national.sellers < 100_000
    assert 4_500 <= national.hs_codes <= 5_600


def test_undervaluation_against_the_hs_norm_signals_fraud(large):
    log_value_per_kg = np.log(large["item_price"] + 1) - np.log(large["net_mass_kg"] + 1)
    below_norm = log_value_per_kg - log_value_per_kg.groupby(large["hs6_code"]).transform("median") < -1.5
    assert below_norm.mean() > 0.02
    assert large.loc[below_norm, "fraud"].mean() > 2.5 * large.loc[~below_norm, "fraud"].mean()


def test_a_model_learns_the_planted_patterns_on_later_declarations():
    history = synthesize(30_000, seed=9)
    matrix, _ = training_features(history, smoothing=10)
    is_train = (history["declaration_date"] < "2021-07-01").to_numpy()
    # one thread: OpenMP threads spin-waiting on a busy 2-core machine make a 2-thread fit 40x slower
    params = {
        "objective": "binary",
        "learning_rate": 0.1,
        "num_leaves": 15,
        "min_data_in_leaf": 50,
        "num_threads": 1,
        "seed": 1,
        "deterministic": True,
        "verbosity": -1,
    }
    train_set = lgb.Dataset(matrix.loc[is_train, FEATURE_NAMES], history.loc[is_train, "fraud"].to_numpy())
    booster = lgb.train(params, train_set, num_boost_round=40)
    later = booster.predict(matrix.loc[~is_train, FEATURE_NAMES])
    assert roc_auc_score(history.loc[~is_train, "fraud"], later) > 0.7


def test_command_writes_the_same_rows_as_parts_and_never_overwrites_other_things(tmp_path):
    output = tmp_path / "synthetic.parquet"
    main(["--rows", "2500", "--seed", "7", "--output", str(output), "--block-rows", "1000"])
    assert sorted(p.name for p in output.iterdir()) == [part_path(output, i).name for i in range(3)]
    pd.testing.assert_frame_equal(pd.read_parquet(output), synthesize(2_500, seed=7, block_rows=1_000))
    main(["--rows", "10", "--seed", "7", "--output", str(output)])  # a previous output is replaced whole
    assert [p.name for p in output.iterdir()] == ["part-00000.parquet"]
    a_file, a_folder = tmp_path / "notes.txt", tmp_path / "project"
    a_file.write_text("keep me")
    a_folder.mkdir()
    (a_folder / "keep.txt").write_text("keep me")
    for taken in (a_file, a_folder):
        with pytest.raises(SystemExit) as refused:
            main(["--rows", "10", "--output", str(taken)])
        assert refused.value.code == 2
    assert a_file.read_text() == (a_folder / "keep.txt").read_text() == "keep me"
