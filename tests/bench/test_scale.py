"""`make scale` runs the real stages on a synthetic history and reports each one's rows, time and
peak memory, then the validation metrics; a failing stage stops it loudly."""

from __future__ import annotations

import json

import pytest

import bench.scale
from pipelines import paths


def test_one_line_per_stage_then_the_validation_metrics(tmp_path, capsys):
    bench.scale.main(["--rows", "3000", "--rounds", "5", "--dir", str(tmp_path)])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    steps, last = lines[:-1], lines[-1]
    assert [step["stage"] for step in steps] == ["synthesize", "validate", "featurize", "tune", "train"]
    assert steps[0]["rows"] == steps[1]["rows"] == 3000
    for step in steps:
        assert step["rows"] > 0 and step["seconds"] > 0 and step["peak_rss_bytes"] > 50 * 2**20, step
    assert 0 < last["validation_rows"] < 3000
    assert {"precision_at_5", "recall_at_5", "duty_recovered_at_5", "roc_auc", "brier"} <= set(last["metrics"])
    assert all(0 <= value <= 1 for value in last["metrics"].values()), last
    shares = [last["metrics"][f"lane_{lane}_share"] for lane in ("red", "yellow", "green")]
    assert sum(shares) == pytest.approx(1) and last["metrics"]["lane_red_share"] > 0
    # 3,000 rows hold fewer than duty_model.min_rows frauds with a reported duty
    assert last["duty_estimate"] == "declared"
    assert list(tmp_path.iterdir()) == []  # the workspace is scratch


def test_a_failing_stage_stops_the_run_with_its_log(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench.scale, "STAGES", {"no_such_stage": paths.INTERIM, "train": paths.MATRIX})
    with pytest.raises(SystemExit) as stopped:
        bench.scale.main(["--rows", "500", "--dir", str(tmp_path), "--keep"])
    assert "no_such_stage failed (exit 1)" in str(stopped.value.code)
    assert "No module named pipelines.no_such_stage" in str(stopped.value.code)  # the stage's own output
    assert [json.loads(line)["stage"] for line in capsys.readouterr().out.splitlines()] == ["synthesize"]
    [workspace] = tmp_path.iterdir()
    assert (workspace / "logs" / "no_such_stage.log").is_file()
