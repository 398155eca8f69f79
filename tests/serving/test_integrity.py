"""The champion's files are fingerprinted at packaging and checked before the service loads them."""

from __future__ import annotations

from pathlib import Path

import bentoml
import pytest
from bentoml._internal.models import ModelStore

from serving.loading import (
    MODEL_FOLDER,
    ChampionUnavailable,
    file_digests,
    packaged_champion,
    tree_digest,
    verify_files,
)


def test_digests_name_every_file_and_change_with_any_byte(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.txt").write_text("one")
    (tmp_path / "y.bin").write_bytes(b"\x00\x01")
    (tmp_path / "a" / "__pycache__").mkdir()
    (tmp_path / "a" / "__pycache__" / "x.pyc").write_bytes(b"cache")
    digests = file_digests(tmp_path)
    assert sorted(digests) == ["a/x.txt", "y.bin"]
    before = tree_digest(digests)
    (tmp_path / "a" / "x.txt").write_text("onE")
    assert tree_digest(file_digests(tmp_path)) != before
    (tmp_path / "a" / "x.txt").write_text("one")
    assert tree_digest(file_digests(tmp_path)) == before


@pytest.fixture
def store(tmp_path) -> ModelStore:
    return ModelStore(tmp_path / "models")


def _package(store: ModelStore, tag: str, record_digests: bool = True) -> bentoml.Model:
    """A champion as the package stage leaves it: the registry's files, and their digests."""
    with bentoml.models.create(tag, metadata={"version": tag.split(":v")[1]}, _model_store=store) as model:
        folder = Path(model.path_of(MODEL_FOLDER))
        (folder / "artifacts").mkdir(parents=True)
        (folder / "MLmodel").write_text("flavors: {}")
        (folder / "artifacts" / "fraud.txt").write_text("tree 1")
        if record_digests:
            model.info.metadata["files"] = file_digests(folder)
    return bentoml.models.get(tag, _model_store=store)


def test_a_model_whose_files_changed_is_refused_naming_the_files(store):
    model = _package(store, "customs-risk:v10")
    verify_files(model)
    folder = Path(model.path_of(MODEL_FOLDER))
    (folder / "artifacts" / "fraud.txt").write_text("tree 2")
    (folder / "extra.pkl").write_text("?")
    with pytest.raises(ChampionUnavailable) as refused:
        verify_files(model)
    message = str(refused.value)
    assert message.startswith("champion customs-risk:v10 does not match registry version 10")
    assert "changed: artifacts/fraud.txt" in message and "unexpected: extra.pkl" in message
    (folder / "MLmodel").unlink()
    with pytest.raises(ChampionUnavailable, match="missing: MLmodel"):
        verify_files(model)


def test_a_model_without_digests_or_not_in_the_store_is_refused(store):
    with pytest.raises(ChampionUnavailable, match="has no recorded file digests"):
        verify_files(_package(store, "customs-risk:v9", record_digests=False))
    with pytest.raises(
        ChampionUnavailable, match=r"champion customs-risk:v404 is not in the BentoML store .* package stage"
    ):
        packaged_champion("customs-risk:v404")
