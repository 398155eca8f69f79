"""Every file a stage reads or writes, named once; dvc.yaml lists the same paths for DVC.

History between stages is partitioned Parquet: a directory of part files in row order, written
part by part, so no stage needs the whole history in memory and Dask reads each part as a
partition. Paths are relative to the repository root (or a scratch workspace run like it).
The scoring side reads a few of them in a checkout without importing the stages (a bento holds
no pipelines/): serving.settings names those as CHECKOUT_*, and tests/pipelines/test_paths.py
holds the two names of each file equal.
"""

from pathlib import Path

INTERIM = Path("data/interim/declarations.parquet")  # ingest -> validate (directory of parts)
VALIDATED = Path("data/validated/declarations.parquet")  # validate -> featurize (directory of parts)
QUARANTINE = Path("data/quarantine/rejected.parquet")
VALIDATION_REPORT = Path("metrics/validation.json")
MATRIX = Path("data/features/matrix.parquet")  # featurize -> tune, train, evaluate (directory of parts); the report
STATE = Path("data/features/state")
TUNED = Path("data/model/tuned_params.json")
TRIALS = Path("data/model/tuning_trials.csv")
BUNDLE = Path("data/model/bundle")
VALIDATION_SCORES = Path("data/model/validation_scores.parquet")  # the report's and GET /metrics' drift reference
RUN = Path("data/model/run.json")
TARGETING_METRICS = Path("metrics/targeting.json")
PLOTS = Path("plots")
MODEL_CARD = Path("data/model/model_card.md")
REGISTRATION = Path("data/model/registration.json")
PACKAGE = Path("data/model/package.json")
