"""Every knob of the scoring service and the `customs-risk` CLI, read from the environment here and
nowhere else, so the service and the CLI cannot disagree about a default.

`Settings.from_environment()` reads each `RISK_*` variable once. Paths default to the checkout the
process runs in (found by walking up from the working directory to the folder holding `dvc.yaml`
and `pyproject.toml`), always as absolute paths: a service worker runs inside the bento's folder,
so a relative path would name a different file there than in the CLI. Outside a checkout (a
production host) the audit store has no default and must be configured.

The libraries read their own variables (`BENTOML_HOME`, `MLFLOW_TRACKING_URI`,
`BENTOML_DO_NOT_TRACK`); `use_stores()` is the one place that gives them the checkout's defaults,
and must run before `bentoml` is imported. (`OMP_WAIT_POLICY` must precede LightGBM's import, so
`models/__init__.py` sets it for every process that trains or scores.)
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeGuard

REPOSITORY_MARKERS = ("dvc.yaml", "pyproject.toml")
# The registered model the service serves (its responses and the report name it), and the
# BentoML service it is served by; the bento the package stage builds and `make serve` serves.
MODEL_NAME = "customs-risk"
BENTO_NAME = f"{MODEL_NAME}-service"
DEFAULT_MODEL_TAG = f"{MODEL_NAME}:latest"  # the newest packaged version, when serving from source
# The request body limit (413 beyond) unless RISK_MAX_BODY_BYTES sets another: 4 MiB holds a
# full batch of 1,000 declarations.
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
# Where `make run` leaves things in a checkout: the service, the CLI and the stages share them
# (pipelines.paths names the stages' files from these).
CHECKOUT_AUDIT_DB = Path("data/serving/audit.db")
CHECKOUT_PROFILES = Path("serving/risk_profiles.yaml")
CHECKOUT_BENTOML_HOME = Path(".bentoml")
CHECKOUT_MLFLOW_DB = Path("mlflow.db")
CHECKOUT_PARAMS = Path("params.yaml")
# The champion's validation window, which drift is measured against (the report, GET /metrics).
CHECKOUT_VALIDATION_SCORES = Path("data/model/validation_scores.parquet")
CHECKOUT_MATRIX = Path("data/features/matrix.parquet")
# The rules file shipped inside the bento: outside a checkout the service still routes by the
# examples it was packaged with rather than refusing to start.
PACKAGED_PROFILES = Path(__file__).with_name("risk_profiles.yaml")
AUDIT_DB_REQUIRED = (
    "RISK_AUDIT_DB must be the absolute path of the audit store, e.g. /var/lib/customs-risk/audit.db, "
    f"or a postgresql:// URL (in a checkout it defaults to {CHECKOUT_AUDIT_DB} there)"
)
# The schemes of a store on a PostgreSQL server (RISK_AUDIT_DB); anything else is a SQLite path.
SERVER_SCHEMES = ("postgresql://", "postgresql+psycopg://")
PROFILES_ABSOLUTE = "RISK_PROFILES must be an absolute path: the service runs inside the bento's folder"
PARTNER_KEYS_ABSOLUTE = "RISK_PARTNER_KEYS must be an absolute path: the service runs inside the bento's folder"
# The code this center signs its exported alerts with (`issued_by`, docs/alerts.md) until
# RISK_CENTER_CODE names it: "XX" is an ISO 3166 user-assigned code, never a real country's.
DEFAULT_CENTER_CODE = "XX"
CENTER_CODE = r"[A-Z][A-Z0-9_-]{1,15}"  # a partner or center code: KZ, BE, EU-OLAF


class SettingsError(ValueError):
    """A setting the service or the CLI cannot use, named with what to set instead."""


def repository_root(start: Path | None = None) -> Path | None:
    """The checkout holding `start` (the working directory by default): the nearest folder,
    `start` or above, with both `dvc.yaml` and `pyproject.toml`; None outside any checkout."""
    here = Path(start if start is not None else Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if all((folder / marker).is_file() for marker in REPOSITORY_MARKERS):
            return folder
    return None


def is_server_url(location: str | Path | None) -> TypeGuard[str]:
    """Whether a store's location is a PostgreSQL URL rather than the path of a SQLite file."""
    return isinstance(location, str) and location.startswith(SERVER_SCHEMES)


def masked(location: str | Path) -> str:
    """A store's location as a message may show it: a URL's password replaced by ***."""
    return re.sub(r"^([a-z+]+://[^/@:]*:)[^/@]*@", r"\1***@", str(location))


def _workers(value: str) -> int | str:
    if value == "cpu_count":
        return value
    return _positive_int("RISK_WORKERS", value, "a number of processes (1 or more) or cpu_count")


def _center_code(value: str) -> str:
    if not re.fullmatch(CENTER_CODE, value):
        raise SettingsError(
            f"RISK_CENTER_CODE must be 2 to 16 capital letters, digits, - or _, starting with a letter, got {value!r}"
        )
    return value


def _positive_int(name: str, value: str, expected: str = "a whole number of bytes above 0") -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise SettingsError(f"{name} must be {expected}, got {value!r}")
    return number


@dataclass(frozen=True)
class Settings:
    """What the service and the CLI run with. Build it with `from_environment()`."""

    # The checkout the process runs in, or None on a host that serves a bento outside any.
    checkout: Path | None = None
    # RISK_API_KEYS, comma-separated. Unset: no keys, and only loopback clients are answered, so
    # a service started without keys is never open to the network by accident.
    api_keys: tuple[str, ...] = ()
    # RISK_AUDIT_DB. Default: the checkout's data/serving/audit.db, so `make serve` and
    # `customs-risk audit` / `export-feedback` read and write the same store. None outside a
    # checkout: a store must outlive the bento, so the operator chooses where it lives.
    # A postgresql:// URL (kept as text) instead: every replica pointed at it shares one store.
    audit_db: Path | str | None = None
    # RISK_PROFILES. Default: the checkout's rules file, which analysts edit and the service
    # re-reads; outside a checkout the copy packaged in the bento.
    profiles: Path = PACKAGED_PROFILES
    # RISK_WORKERS: processes, each with its own copy of the model, or "cpu_count". One by
    # default: a model copy per worker costs memory a small host may not have.
    workers: int | str = 1
    # RISK_MAX_BODY_BYTES: the request body limit; a larger body gets 413.
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    # RISK_MODEL_TAG: serve or score another model than the packaged one (a rollback test).
    # None: the model the bento was packaged with, or DEFAULT_MODEL_TAG from source.
    model_tag: str | None = None
    # BENTOML_HOME as the libraries will see it: the variable, else the checkout's .bentoml
    # (where `make run` packages the champion), else None for BentoML's own ~/bentoml.
    bentoml_home: Path | None = None
    # MLFLOW_TRACKING_URI likewise: the variable (a team server), else the checkout's mlflow.db.
    mlflow_tracking_uri: str | None = None
    # RISK_PARTNER_KEYS: the JSON file mapping a partner's code to its key file (docs/alerts.md).
    # None: no partner keys, so hashed alerts can be neither imported nor exported.
    partner_keys: Path | None = None
    # RISK_CENTER_CODE: this center's own code, `issued_by` of the alerts it exports.
    center_code: str = DEFAULT_CENTER_CODE
    # Which of the above came from the checkout rather than a variable, to say so when used.
    from_checkout: frozenset[str] = frozenset()

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None, cwd: Path | None = None) -> Settings:
        """Read every variable once (os.environ unless `environ` is given); the checkout is
        looked for from `cwd`, the working directory by default."""
        env = os.environ if environ is None else environ
        root = repository_root(cwd)
        from_checkout: set[str] = set()

        def path(name: str, default: Path) -> Path | None:
            value = env.get(name, "").strip()
            if value:
                return Path(value)
            if root is None:
                return None
            from_checkout.add(name)
            return root / default

        audit_db = env.get("RISK_AUDIT_DB", "").strip()
        keys = tuple(key.strip() for key in env.get("RISK_API_KEYS", "").split(",") if key.strip())
        profiles = path("RISK_PROFILES", CHECKOUT_PROFILES)
        body = env.get("RISK_MAX_BODY_BYTES", "").strip()
        mlflow = env.get("MLFLOW_TRACKING_URI", "").strip()
        if not mlflow and root is not None:
            mlflow = f"sqlite:///{root / CHECKOUT_MLFLOW_DB}"
            from_checkout.add("MLFLOW_TRACKING_URI")
        return cls(
            checkout=root,
            api_keys=keys,
            audit_db=audit_db if is_server_url(audit_db) else path("RISK_AUDIT_DB", CHECKOUT_AUDIT_DB),
            profiles=profiles if profiles is not None else PACKAGED_PROFILES,
            workers=_workers(env.get("RISK_WORKERS", "").strip() or "1"),
            max_body_bytes=_positive_int("RISK_MAX_BODY_BYTES", body) if body else DEFAULT_MAX_BODY_BYTES,
            model_tag=env.get("RISK_MODEL_TAG", "").strip() or None,
            bentoml_home=path("BENTOML_HOME", CHECKOUT_BENTOML_HOME),
            mlflow_tracking_uri=mlflow or None,
            partner_keys=Path(env.get("RISK_PARTNER_KEYS", "").strip())
            if env.get("RISK_PARTNER_KEYS", "").strip()
            else None,
            center_code=_center_code(env.get("RISK_CENTER_CODE", "").strip() or DEFAULT_CENTER_CODE),
            from_checkout=frozenset(from_checkout),
        )

    def audit_store(self) -> Path | str:
        """The audit store: a PostgreSQL URL, or a SQLite file's absolute path (a worker runs
        inside the bento's folder, and a store there would vanish with the bento)."""
        if is_server_url(self.audit_db):
            return self.audit_db
        if not isinstance(self.audit_db, Path) or not self.audit_db.is_absolute():
            raise SettingsError(AUDIT_DB_REQUIRED)
        return self.audit_db

    def profiles_file(self) -> Path:
        if not self.profiles.is_absolute():
            raise SettingsError(PROFILES_ABSOLUTE)
        return self.profiles

    def partner_keys_file(self) -> Path | None:
        """The partner keys file (RISK_PARTNER_KEYS), absolute, or None when unset."""
        if self.partner_keys is not None and not self.partner_keys.is_absolute():
            raise SettingsError(PARTNER_KEYS_ABSOLUTE)
        return self.partner_keys

    def library_defaults(self) -> dict[str, str]:
        """The variables the libraries read, as this checkout would have them. Usage tracking is
        off: a customs administration's hosts send nothing to a vendor."""
        defaults = {"BENTOML_DO_NOT_TRACK": "true"}
        if self.bentoml_home is not None:
            defaults["BENTOML_HOME"] = str(self.bentoml_home)
        if self.mlflow_tracking_uri is not None:
            defaults["MLFLOW_TRACKING_URI"] = self.mlflow_tracking_uri
        return defaults

    def describe_stores(self) -> str:
        """One line naming the stores in use, for a person to check they are the intended ones."""

        def origin(name: str) -> str:
            return " (this checkout)" if name in self.from_checkout else f" ({name})"

        home = f"{self.bentoml_home}{origin('BENTOML_HOME')}" if self.bentoml_home else "BentoML's default ~/bentoml"
        mlflow = (
            f"{self.mlflow_tracking_uri}{origin('MLFLOW_TRACKING_URI')}"
            if self.mlflow_tracking_uri
            else "MLflow's default"
        )
        audit = f"{masked(self.audit_db)}{origin('RISK_AUDIT_DB')}" if self.audit_db else "none (set RISK_AUDIT_DB)"
        return f"BentoML store {home}; MLflow {mlflow}; audit store {audit}"


def use_stores(settings: Settings, environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Give the libraries the checkout's stores where their variables are unset; returns what was
    set. Call it before importing bentoml: BentoML fixes its store on first use."""
    env = os.environ if environ is None else environ
    applied = {}
    for name, value in settings.library_defaults().items():
        if not env.get(name):
            env[name] = value
            applied[name] = value
    return applied


def child_environment(first_on_path: Path) -> dict[str, str]:
    """This process's environment for a command it starts, with `first_on_path` searched first
    (a stage runs `python -m ...`: the interpreter of this venv, as `make run` puts it first)."""
    return {**os.environ, "PATH": f"{first_on_path}{os.pathsep}{os.environ.get('PATH', '')}"}
