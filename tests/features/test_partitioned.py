"""The streamed featurizer against the in-memory one (the reference the rest of the tests pin):
the same matrix and state whatever the parts' order and size, and a clear error naming a part
that cannot be used."""

from __future__ import annotations

import pandas as pd
import pytest

from features.history import FeatureState
from features.matrix import FEATURE_NAMES, model_input, training_features
from features.partitioned import CARRIED, HistoryFileError, featurize_history

SMOOTHING = 10


def write_parts(history: pd.DataFrame, directory, sizes: list[int]) -> None:
    directory.mkdir(parents=True)
    start = 0
    for number, size in enumerate(sizes):
        history.iloc[start : start + size].to_parquet(directory / f"part-{number:05d}.parquet", index=False)
        start += size


def window(history: pd.DataFrame) -> tuple[str, str]:
    dates = history["declaration_date"]
    return str(dates.min().date()), str(dates.max().date())


@pytest.mark.parametrize("part_rows", [250, 100_000])
def test_streamed_features_equal_the_in_memory_ones(history, tmp_path, part_rows):
    shuffled = history.sample(frac=1, random_state=3).reset_index(drop=True)
    write_parts(shuffled, tmp_path / "validated", [1000, 1, 2999])
    info = featurize_history(
        tmp_path / "validated",
        tmp_path / "matrix",
        tmp_path / "state",
        window(history),
        SMOOTHING,
        part_rows=part_rows,
    )
    expected, state = training_features(history, SMOOTHING)
    streamed = pd.read_parquet(tmp_path / "matrix")
    pd.testing.assert_frame_equal(streamed[FEATURE_NAMES], model_input(expected), check_exact=True)
    pd.testing.assert_frame_equal(streamed[CARRIED], history[CARRIED], check_dtype=False)
    state.save(tmp_path / "reference")
    assert FeatureState.load(tmp_path / "state").version == state.version
    assert info["rows"] == len(history) and info["parts"] >= (len(history) // part_rows if part_rows < 4000 else 1)
    assert not list(tmp_path.glob(".*work")), "work files are removed"


def test_rows_outside_the_window_are_left_out(history, tmp_path):
    write_parts(history, tmp_path / "validated", [len(history)])
    first = window(history)[0]
    middle = str(history["declaration_date"].iloc[len(history) // 2].date())
    featurize_history(tmp_path / "validated", tmp_path / "matrix", tmp_path / "state", (first, middle), SMOOTHING)
    dates = pd.read_parquet(tmp_path / "matrix", columns=["declaration_date"])["declaration_date"]
    assert dates.max() == pd.Timestamp(middle) and len(dates) == (history["declaration_date"] <= middle).sum()


def test_a_corrupt_part_is_named(history, tmp_path):
    write_parts(history, tmp_path / "validated", [2000, 2000])
    (tmp_path / "validated" / "part-00001.parquet").write_bytes(b"PAR1 not really parquet")
    with pytest.raises(HistoryFileError, match=r"part-00001\.parquet: not a readable Parquet file"):
        featurize_history(tmp_path / "validated", tmp_path / "matrix", tmp_path / "state", window(history), SMOOTHING)
    assert not (tmp_path / "matrix").exists()


def test_a_part_missing_a_column_is_named(history, tmp_path):
    write_parts(history, tmp_path / "validated", [2000])
    history.iloc[2000:].drop(columns=["importer_id"]).to_parquet(tmp_path / "validated" / "part-00001.parquet")
    with pytest.raises(HistoryFileError, match=r"part-00001\.parquet: missing column\(s\) importer_id"):
        featurize_history(tmp_path / "validated", tmp_path / "matrix", tmp_path / "state", window(history), SMOOTHING)


def test_no_rows_in_the_window_says_so(history, tmp_path):
    write_parts(history, tmp_path / "validated", [len(history)])
    with pytest.raises(HistoryFileError, match=r"no declarations dated 1999-01-01\.\.1999-12-31"):
        featurize_history(
            tmp_path / "validated", tmp_path / "matrix", tmp_path / "state", ("1999-01-01", "1999-12-31"), SMOOTHING
        )
