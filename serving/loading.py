"""Finding the packaged champion in the BentoML store and proving its files are the ones the
MLflow registry holds, and how its lanes are decided as packaged: one loader for the service and
the CLI."""

from __future__ import annotations

import gc
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import bentoml
import numpy as np
import pandas as pd

from models import release_freed_memory
from models.bundle import RiskModel
from models.lanes import FIXED, FOLLOW, LANES, SCORES, THRESHOLDS, LanePolicy, ScoreWindow, threshold_mode
from serving.settings import DEFAULT_MODEL_TAG, Settings

MODEL_FOLDER = "mlflow_model"  # where bentoml.mlflow.import_model puts the registry's files
# The champion's custom object (pipelines.package) holding the validation window's last
# `serving.follow_window` out-of-sample scores, by name of score, in date order.
LANE_WINDOW = "lane_window"


class ChampionUnavailable(RuntimeError):
    """The service must not start: no champion, or not the files the registry holds."""


def model_tag(settings: Settings) -> str:
    """The model this bento was packaged with (a bento argument), unless the settings name
    another (RISK_MODEL_TAG); DEFAULT_MODEL_TAG when serving from source."""
    packaged = getattr(bentoml.use_arguments(), "model_tag", None)
    return settings.model_tag or packaged or DEFAULT_MODEL_TAG


def bentoml_store() -> str:
    """The BentoML store this process opened (fixed on BentoML's first use), to name it when the
    champion is not there."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    return str(BentoMLContainer.bentoml_home.get())


def file_digests(directory: Path) -> dict[str, str]:
    """sha256 of every file under a directory, by relative path. Python's bytecode caches are
    left out: importing the model's code may write them."""
    digests = {}
    files = (p for p in Path(directory).rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    for path in sorted(files):
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digests[path.relative_to(directory).as_posix()] = digest.hexdigest()
    return digests


def tree_digest(digests: dict[str, str]) -> str:
    """One sha256 for a whole file tree: what the registry version is tagged with."""
    return hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest()


def packaged_champion(tag: str) -> bentoml.Model:
    try:
        return bentoml.models.get(tag)
    except bentoml.exceptions.NotFound:
        raise ChampionUnavailable(
            f"champion {tag} is not in the BentoML store {bentoml_store()}: run `make run` (or `dvc repro`) "
            "in the checkout first; its package stage puts the champion there"
        ) from None


def verify_files(bento_model: bentoml.Model) -> None:
    """Refuse a champion whose files differ from the sha256 digests recorded at packaging,
    which the package stage checked against the registry version's `files_sha256` tag."""
    recorded = dict(bento_model.info.metadata).get("files")
    if not recorded:
        raise ChampionUnavailable(f"champion {bento_model.tag} has no recorded file digests: package it again")
    found = file_digests(Path(bento_model.path_of(MODEL_FOLDER)))
    changed = sorted(name for name in recorded.keys() & found.keys() if recorded[name] != found[name])
    missing = sorted(recorded.keys() - found.keys())
    added = sorted(found.keys() - recorded.keys())
    if changed or missing or added:
        details = "; ".join(
            f"{label}: {', '.join(names[:5])}"
            for label, names in (("changed", changed), ("missing", missing), ("unexpected", added))
            if names
        )
        raise ChampionUnavailable(
            f"champion {bento_model.tag} does not match registry version {bento_model.info.metadata.get('version')} "
            f"(files_sha256 {bento_model.info.metadata.get('files_sha256')}): {details}. Refusing to serve it; "
            "package the champion again from the registry"
        )


def load_packaged(bento_model: bentoml.Model) -> RiskModel:
    model = _loaded(bento_model)
    _give_back_memory()  # what MLflow's and BentoML's loading left behind
    return model


def check_loadable(bento_model: bentoml.Model) -> None:
    """`load_packaged`, for a process that only checks the champion and serves nothing
    (`bentoml serve`'s own process, before its workers start): it does not keep the model."""
    _loaded(bento_model)
    _give_back_memory()


def _loaded(bento_model: bentoml.Model) -> RiskModel:
    verify_files(bento_model)
    try:
        return bentoml.mlflow.load_model(bento_model).unwrap_python_model().model
    except Exception as err:  # any failure to load means: do not serve
        raise ChampionUnavailable(f"champion {bento_model.tag} cannot be loaded: {err}") from err


def _give_back_memory() -> None:
    gc.collect()
    release_freed_memory()


@dataclass(frozen=True)
class PackagedLanes:
    """How the champion's lanes are decided, as packaged (params.yaml `serving`): thresholds
    `fixed` as fitted on the validation window, or following the last `size` declarations the
    champion scored, topped up from the validation window's scores (`packaged`, oldest first)
    until that many were scored. The service and `customs-risk score` read it here, so they
    follow alike."""

    policy: LanePolicy
    mode: str
    size: int
    packaged: np.ndarray

    @classmethod
    def of(cls, bento_model: bentoml.Model, policy: LanePolicy) -> PackagedLanes:
        serving = dict(bento_model.info.metadata)["serving"]
        # a champion packaged before thresholds could follow has them fixed, and no window
        mode = threshold_mode(serving.get("lane_thresholds", FIXED))
        packaged = np.empty((0, len(SCORES)))
        if mode == FOLLOW:  # the validation window's last scores, packaged with the model
            window = bento_model.custom_objects[LANE_WINDOW]
            packaged = np.column_stack([window[name] for name in SCORES])
        return cls(policy, mode, int(serving.get("follow_window", 0)), packaged)

    @property
    def follows(self) -> bool:
        """Whether the thresholds follow traffic: only then is a window read and kept."""
        return self.mode == FOLLOW

    def window(self, recent: pd.DataFrame | None = None) -> ScoreWindow:
        """What the next declarations' thresholds follow, given the champion's `recent` scores in
        the store (AuditStore.recent_scores, oldest first; None for a file scored on its own)."""
        scored = () if recent is None else (recent[list(SCORES)].to_numpy(dtype=float),)
        return ScoreWindow.of(self.size, self.packaged, *scored)

    def describe(self, recent: pd.DataFrame) -> dict:
        """The lanes as /metadata shows them: each source's share and their order, the thresholds
        the next declaration would be decided with and how they are set, the thresholds fitted
        on the validation window, and each lane's share of the champion's `recent` decisions."""
        current = self.window(recent).policy(self.policy) if self.follows else self.policy
        packaged = self.policy.describe()
        counts = recent["lane"].value_counts()
        return {
            **current.describe(),
            "mode": self.mode,
            "packaged_thresholds": {name: packaged[name] for name in THRESHOLDS},
            "window": {
                "size": self.size,
                "decisions": len(recent),
                "shares": {lane: float(counts.get(lane, 0) / len(recent)) if len(recent) else None for lane in LANES},
            },
        }
