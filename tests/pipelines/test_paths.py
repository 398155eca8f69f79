"""A file or a name the stages and the scoring side both use is the same for both: the scoring
side cannot import the stages (a bento holds no pipelines/), so each is written in both places
and held equal here."""

from __future__ import annotations

import yaml

from pipelines import common, paths
from serving import settings
from tests.conftest import REPO


def test_the_scoring_side_reads_the_files_the_stages_write():
    assert settings.CHECKOUT_VALIDATION_SCORES == paths.VALIDATION_SCORES
    assert settings.CHECKOUT_MATRIX == paths.MATRIX
    assert settings.CHECKOUT_PARAMS == common.PARAMS


def test_the_model_the_stages_register_is_the_one_the_service_serves():
    params = yaml.safe_load((REPO / common.PARAMS).read_text())
    assert params["register"]["model_name"] == settings.MODEL_NAME
    assert settings.DEFAULT_MODEL_TAG.split(":")[0] == settings.MODEL_NAME
