"""serving/settings.py: one default per knob, overrides, absolute paths from the checkout, and the
CLI finding the checkout's stores with no environment set (issue 15, point 1)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from serving.cli import app
from serving.settings import (
    AUDIT_DB_REQUIRED,
    DEFAULT_MAX_BODY_BYTES,
    PACKAGED_PROFILES,
    Settings,
    SettingsError,
    repository_root,
    use_stores,
)

SERVING = Path(__file__).resolve().parents[2] / "serving"
CLI = Path(sys.executable).with_name("customs-risk")
OWN_VARIABLES = ("RISK_", "BENTOML_", "MLFLOW_")


def _checkout(root: Path) -> Path:
    """A folder that looks like a clone: the two files that mark a repository root."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "dvc.yaml").write_text("stages: {}\n")
    (root / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    return root


def test_defaults_in_a_checkout_are_its_stores_as_absolute_paths(tmp_path):
    root = _checkout(tmp_path / "clone")
    settings = Settings.from_environment({}, cwd=root)
    assert settings.checkout == root.resolve()
    assert settings.audit_db == root.resolve() / "data/serving/audit.db"
    assert settings.audit_store() == settings.audit_db
    assert settings.profiles == root.resolve() / "serving/risk_profiles.yaml"
    assert settings.bentoml_home == root.resolve() / ".bentoml"
    assert settings.mlflow_tracking_uri == f"sqlite:///{root.resolve() / 'mlflow.db'}"
    assert all(path.is_absolute() for path in (settings.audit_db, settings.profiles, settings.bentoml_home))
    assert settings.api_keys == ()
    assert settings.workers == 1
    assert settings.max_body_bytes == DEFAULT_MAX_BODY_BYTES
    assert settings.model_tag is None
    assert "(this checkout)" in settings.describe_stores()


def test_outside_a_checkout_the_audit_store_must_be_configured(tmp_path):
    settings = Settings.from_environment({}, cwd=tmp_path)
    assert settings.checkout is None
    assert settings.audit_db is None
    with pytest.raises(SettingsError) as refused:
        settings.audit_store()
    assert str(refused.value) == AUDIT_DB_REQUIRED
    assert "RISK_AUDIT_DB must be the absolute path of the audit store" in AUDIT_DB_REQUIRED
    assert settings.profiles == PACKAGED_PROFILES  # the rules shipped in the bento
    assert settings.bentoml_home is None and settings.mlflow_tracking_uri is None
    assert settings.library_defaults() == {"BENTOML_DO_NOT_TRACK": "true"}


def test_variables_override_every_default(tmp_path):
    root = _checkout(tmp_path / "clone")
    environ = {
        "RISK_API_KEYS": " k1, ,k2 ",
        "RISK_AUDIT_DB": "/var/lib/customs-risk/audit.db",
        "RISK_PROFILES": "/etc/customs-risk/risk_profiles.yaml",
        "RISK_WORKERS": "4",
        "RISK_MAX_BODY_BYTES": "1024",
        "RISK_MODEL_TAG": "customs-risk:v3",
        "BENTOML_HOME": "/srv/bentoml",
        "MLFLOW_TRACKING_URI": "http://mlflow:5000",
    }
    settings = Settings.from_environment(environ, cwd=root)
    assert settings.api_keys == ("k1", "k2")
    assert settings.audit_store() == Path("/var/lib/customs-risk/audit.db")
    assert settings.profiles_file() == Path("/etc/customs-risk/risk_profiles.yaml")
    assert settings.workers == 4
    assert settings.max_body_bytes == 1024
    assert settings.model_tag == "customs-risk:v3"
    assert settings.bentoml_home == Path("/srv/bentoml")
    assert settings.mlflow_tracking_uri == "http://mlflow:5000"
    assert settings.from_checkout == frozenset()
    assert Settings.from_environment({"RISK_WORKERS": "cpu_count"}, cwd=root).workers == "cpu_count"


def test_a_postgresql_store_is_a_url_kept_as_given_and_never_shown_with_its_password(tmp_path):
    url = "postgresql://risk:s3cret@db.center.example:5432/customs"
    settings = Settings.from_environment({"RISK_AUDIT_DB": url}, cwd=tmp_path)
    assert settings.audit_store() == url
    described = settings.describe_stores()
    assert "s3cret" not in described and "postgresql://risk:***@db.center.example:5432/customs" in described


@pytest.mark.parametrize(
    ("name", "value"), [("RISK_WORKERS", "0"), ("RISK_WORKERS", "many"), ("RISK_MAX_BODY_BYTES", "4MB")]
)
def test_a_malformed_number_is_refused_by_name(tmp_path, name, value):
    with pytest.raises(SettingsError, match=name):
        Settings.from_environment({name: value}, cwd=tmp_path)


def test_relative_paths_are_refused_and_defaults_are_absolute_from_a_relative_start(tmp_path, monkeypatch):
    root = _checkout(tmp_path / "clone")
    settings = Settings.from_environment({"RISK_AUDIT_DB": "audit.db", "RISK_PROFILES": "profiles.yaml"}, cwd=root)
    with pytest.raises(SettingsError, match="RISK_AUDIT_DB must be the absolute path"):
        settings.audit_store()
    with pytest.raises(SettingsError, match="RISK_PROFILES must be an absolute path"):
        settings.profiles_file()
    (root / "serving").mkdir()
    monkeypatch.chdir(root / "serving")
    relative = Settings.from_environment({}, cwd=Path("."))
    assert relative.audit_store() == root.resolve() / "data/serving/audit.db"
    assert Settings.from_environment({}).audit_store() == relative.audit_store()


def test_the_repository_root_is_found_from_a_subdirectory(tmp_path):
    root = _checkout(tmp_path / "clone")
    deep = root / "data" / "serving" / "nested"
    deep.mkdir(parents=True)
    assert repository_root(deep) == root.resolve()
    assert repository_root(root) == root.resolve()
    assert repository_root(tmp_path) is None
    # both files mark a root: a DVC project inside the checkout without pyproject.toml is not one
    (deep / "dvc.yaml").write_text("stages: {}\n")
    assert repository_root(deep) == root.resolve()


def test_use_stores_fills_only_what_is_unset(tmp_path):
    root = _checkout(tmp_path / "clone")
    environ = {"MLFLOW_TRACKING_URI": "http://team:5000"}
    settings = Settings.from_environment(environ, cwd=root)
    applied = use_stores(settings, environ)
    assert applied == {"BENTOML_DO_NOT_TRACK": "true", "BENTOML_HOME": str(root.resolve() / ".bentoml")}
    assert environ["MLFLOW_TRACKING_URI"] == "http://team:5000"
    assert use_stores(settings, environ) == {}


def test_only_the_settings_module_reads_the_environment():
    for module in SERVING.glob("*.py"):
        if module.name == "settings.py":
            continue
        text = module.read_text()
        for reading in ("os.environ", "getenv", "envvar="):
            assert reading not in text, f"{module.name} reads the environment ({reading}); use serving.settings"


def _no_environment() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(OWN_VARIABLES)}
    return {**env, "PYTHONDONTWRITEBYTECODE": "1", "COLUMNS": "80"}


def test_score_in_a_checkout_without_environment_uses_its_bentoml_store_and_says_what_to_run(tmp_path):
    root = _checkout(tmp_path / "clone")
    (root / "declarations.csv").write_text("declaration_id\n1\n")
    result = subprocess.run(
        [str(CLI), "score", "--input", "declarations.csv", "--output", "scored.csv"],
        cwd=root,
        env=_no_environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    store = root.resolve() / ".bentoml"
    assert f"BentoML store {store} (this checkout)" in result.stderr
    assert f"MLflow sqlite:///{root.resolve() / 'mlflow.db'} (this checkout)" in result.stderr
    assert f"is not in the BentoML store {store}" in result.stderr
    assert "run `make run`" in result.stderr
    assert "bentoml/models" not in result.stderr.replace(str(store), "")  # never ~/bentoml
    assert not (root / "scored.csv").exists()


def test_audit_and_export_feedback_default_to_the_checkouts_store(tmp_path, monkeypatch):
    root = _checkout(tmp_path / "clone")
    for name in ("RISK_AUDIT_DB", "RISK_PROFILES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(root)
    expected = str(root.resolve() / "data/serving/audit.db")
    audit = CliRunner().invoke(app, ["audit", "--since", "2021-04-01", "--until", "2021-04-02", "--output", "x.csv"])
    assert audit.exit_code == 2
    assert expected in " ".join(audit.output.split())
    feedback = CliRunner().invoke(app, ["export-feedback", "--output", "out.parquet"])
    assert feedback.exit_code == 2
    assert f"no audit store at {expected}" in feedback.stderr


def test_audit_outside_a_checkout_without_a_store_says_what_to_set(tmp_path, monkeypatch):
    monkeypatch.delenv("RISK_AUDIT_DB", raising=False)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["audit", "--since", "2021-04-01", "--until", "2021-04-02", "--output", "x.csv"])
    assert result.exit_code == 2
    assert "RISK_AUDIT_DB must be the absolute path of the audit store" in " ".join(result.output.split())
    result = CliRunner().invoke(app, ["export-feedback", "--output", "out.parquet"])
    assert result.exit_code == 2
    assert "RISK_AUDIT_DB must be the absolute path of the audit store" in result.stderr


def test_partner_keys_and_center_code(tmp_path):
    root = _checkout(tmp_path / "clone")
    settings = Settings.from_environment({}, cwd=root)
    assert settings.partner_keys is None and settings.partner_keys_file() is None
    assert settings.center_code == "XX"
    settings = Settings.from_environment(
        {"RISK_PARTNER_KEYS": "/etc/customs-risk/partners.json", "RISK_CENTER_CODE": "KZ"}, cwd=root
    )
    assert settings.partner_keys_file() == Path("/etc/customs-risk/partners.json")
    assert settings.center_code == "KZ"
    with pytest.raises(SettingsError, match="RISK_PARTNER_KEYS must be an absolute path"):
        Settings.from_environment({"RISK_PARTNER_KEYS": "partners.json"}, cwd=root).partner_keys_file()
    with pytest.raises(SettingsError, match="RISK_CENTER_CODE"):
        Settings.from_environment({"RISK_CENTER_CODE": "kz"}, cwd=root)
