"""Analyst risk profiles: targeting rules an analyst writes in YAML, next to the model.

The file is data, never code: each condition is a field, an operator from a short fixed list and
its values, checked when the file is read so a typo is refused with the rule's name and the
field, not discovered on a declaration. The service reads the file again when it changes, so a
new profile reaches the lanes without a restart or a retrain. This module says which rules fire
on which declarations; what a rule that fires does to a lane is the decision's (serving.decide).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from features.history import with_derived_fields
from features.matrix import CATEGORICAL, FEATURE_NAMES, serving_features
from features.schema import COUNTRY_CODES, NUMERIC_FIELDS, STRING_FIELDS, Declarations
from models.lanes import RAISED_LANES
from serving.settings import Settings, SettingsError

logger = logging.getLogger("customs_risk.rules")

TEXT_FIELDS = {*STRING_FIELDS, "hs_chapter"}
NUMBER_FIELDS = {*NUMERIC_FIELDS, "value_per_kg", *(set(FEATURE_NAMES) - set(CATEGORICAL) - set(NUMERIC_FIELDS))}
RECORD_NUMBERS = {*NUMERIC_FIELDS, "value_per_kg"}
COUNTRY_FIELDS = {"origin_country", "departure_country"}
TEXT_OPERATORS = ("in", "not_in", "prefix")
NUMBER_OPERATORS = ("below", "above")
RULE_KEYS = {"name", "lane", "reason", "when"}


class RiskProfileError(ValueError):
    """A rules file that cannot be used, with every problem found in it."""

    def __init__(self, path: Path, problems: list[str]):
        self.problems = problems
        listed = "\n".join(f"  - {problem}" for problem in problems)
        super().__init__(f"risk profiles {path}: {len(problems)} problem(s):\n{listed}")


@dataclass(frozen=True)
class Condition:
    field: str
    operator: str
    values: tuple  # strings for text operators, one float for number operators

    def holds(self, column: pd.Series) -> np.ndarray:
        """Where the condition is true; a missing value meets no condition."""
        present = column.notna().to_numpy()
        if self.operator in NUMBER_OPERATORS:
            numbers = column.to_numpy(dtype="float64")
            with np.errstate(invalid="ignore"):
                met = numbers < self.values[0] if self.operator == "below" else numbers > self.values[0]
            return present & met
        text = column.astype("object").where(column.notna(), "").astype(str)
        if self.operator == "prefix":
            met = text.str.startswith(self.values).to_numpy()
        else:
            met = text.isin(self.values).to_numpy()
            if self.operator == "not_in":
                met = ~met
        return present & met


@dataclass(frozen=True)
class Rule:
    name: str
    lane: str
    reason: str
    conditions: tuple[Condition, ...]

    def matches(self, fields: pd.DataFrame) -> np.ndarray:
        return np.logical_and.reduce([c.holds(fields[c.field]) for c in self.conditions])


def _condition_problems(where: str, field: str, spec) -> list[str]:
    if field not in TEXT_FIELDS | NUMBER_FIELDS:
        return [f"{where}: unknown field '{field}' (record fields, hs_chapter, value_per_kg or a model feature)"]
    if not isinstance(spec, dict) or not spec:
        return [f"{where}.{field}: expected operators such as {{in: [...]}} or {{below: 1.5}}"]
    allowed = TEXT_OPERATORS if field in TEXT_FIELDS else NUMBER_OPERATORS
    problems = []
    for operator, values in spec.items():
        at = f"{where}.{field}.{operator}"
        if operator not in allowed:
            problems.append(f"{at}: '{operator}' does not apply to {field}; use one of {', '.join(allowed)}")
        elif operator in NUMBER_OPERATORS:
            if isinstance(values, bool) or not isinstance(values, (int, float)) or not np.isfinite(values):
                problems.append(f"{at}: expected a number, got {values!r}")
        elif not isinstance(values, list) or not values:
            problems.append(f"{at}: expected a non-empty list of quoted strings")
        else:
            for value in values:
                if not isinstance(value, str) or not value:
                    problems.append(f"{at}: {value!r} must be a quoted, non-empty string (codes keep leading zeros)")
                elif field in COUNTRY_FIELDS and value not in COUNTRY_CODES:
                    problems.append(f"{at}: '{value}' is not an ISO 3166-1 alpha-2 country code (or ZZ, unknown)")
                elif field == "hs6_code" and not (value.isdigit() and len(value) <= 6):
                    problems.append(f"{at}: '{value}' is not an HS code or prefix (up to 6 digits)")
    return problems


def _rule_problems(index: int, rule) -> list[str]:
    if not isinstance(rule, dict):
        return [f"rules[{index}]: expected a mapping with name, lane, reason and when"]
    where = f"rules[{index}] ({rule.get('name', 'unnamed')})"
    problems = [f"{where}: unknown key '{key}'" for key in sorted(set(rule) - RULE_KEYS, key=str)]
    problems += [f"{where}: '{key}' is required" for key in sorted(RULE_KEYS - set(rule))]
    if "name" in rule and (not isinstance(rule["name"], str) or not rule["name"].strip()):
        problems.append(f"{where}.name: expected a non-empty string")
    if "lane" in rule and rule["lane"] not in RAISED_LANES:
        problems.append(f"{where}.lane: expected one of {', '.join(RAISED_LANES)}, got {rule['lane']!r}")
    if "reason" in rule and (not isinstance(rule["reason"], str) or not rule["reason"].strip()):
        problems.append(f"{where}.reason: expected a sentence an officer can read")
    when = rule.get("when")
    if "when" in rule and (not isinstance(when, dict) or not when):
        problems.append(f"{where}.when: expected at least one condition, such as origin_country: {{in: [...]}}")
    elif isinstance(when, dict):
        for field, spec in when.items():
            problems += _condition_problems(f"{where}.when", str(field), spec)
    return problems


def parse_rules(text: str, path: Path) -> tuple[Rule, ...]:
    """Rules from the YAML text of a profiles file; every problem is reported at once."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise RiskProfileError(path, [f"not valid YAML: {err}"]) from None
    if not isinstance(document, dict) or set(document) != {"rules"} or not isinstance(document["rules"], list):
        raise RiskProfileError(path, ["expected a mapping with one key, 'rules', holding a list (it may be empty)"])
    problems = [problem for i, rule in enumerate(document["rules"]) for problem in _rule_problems(i, rule)]
    names = [rule.get("name") for rule in document["rules"] if isinstance(rule, dict)]
    problems += [
        f"rule name '{name}' is used more than once"
        for name in sorted({n for n in names if names.count(n) > 1}, key=str)
    ]
    if problems:
        raise RiskProfileError(path, problems)
    return tuple(
        Rule(
            name=rule["name"].strip(),
            lane=rule["lane"],
            reason=rule["reason"].strip(),
            conditions=tuple(
                Condition(field, operator, (float(values),) if operator in NUMBER_OPERATORS else tuple(values))
                for field, spec in rule["when"].items()
                for operator, values in spec.items()
            ),
        )
        for rule in document["rules"]
    )


def rule_fields(records: pd.DataFrame, needed: set[str], state, matrix: np.ndarray | None = None) -> pd.DataFrame:
    """The values rules look at, for typed declarations: record fields, hs_chapter,
    value_per_kg, and model features only when a rule asks for one: from `matrix` (the serving
    feature matrix, columns in FEATURE_NAMES' order) when the caller scored them already, else
    computed from the feature state."""
    fields = with_derived_fields(records)
    with np.errstate(divide="ignore", invalid="ignore"):
        fields["value_per_kg"] = fields["item_price"] / fields["net_mass_kg"]
    wanted = needed - TEXT_FIELDS - RECORD_NUMBERS
    if wanted:
        if matrix is None:
            features, _ = serving_features(records, state)
            columns = {name: features[name].to_numpy() for name in wanted}
        else:
            columns = {name: matrix[:, FEATURE_NAMES.index(name)] for name in wanted}
        fields = fields.assign(**columns)
    return fields


def rule_hits(
    typed: pd.DataFrame | Declarations, rules: tuple[Rule, ...], state, matrix: np.ndarray | None = None
) -> np.ndarray:
    """Per declaration (rows) and rule (columns), whether the rule fires."""
    typed = typed.frame() if isinstance(typed, Declarations) else typed.reset_index(drop=True)
    fields = rule_fields(typed, {c.field for rule in rules for c in rule.conditions}, state, matrix)
    return np.column_stack([rule.matches(fields) for rule in rules])


class RiskProfiles:
    """The rules file as the service sees it: read at start-up (a bad file stops the start),
    then read again whenever the file changes. A bad edit is logged and the rules in force are
    kept, so a typo never leaves declarations unrouted."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp = self._file_stamp()
        self.rules = parse_rules(self.path.read_text(), self.path)
        self.reload_error: str | None = None

    @classmethod
    def from_environment(cls, settings: Settings | None = None) -> RiskProfiles:
        """The rules file the settings name (RISK_PROFILES, else the checkout's or the packaged one)."""
        settings = settings or Settings.from_environment()
        try:
            path = settings.profiles_file()
        except SettingsError as err:
            raise RiskProfileError(settings.profiles, [str(err)]) from None
        if not path.is_file():
            raise RiskProfileError(path, ["file not found"])
        return cls(path)

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            info = self.path.stat()
        except OSError:
            return None
        return info.st_mtime_ns, info.st_size, info.st_ino

    def current(self) -> tuple[Rule, ...]:
        """The rules in force, re-read first when the file changed since the last look."""
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return self.rules
        with self._lock:
            if stamp != self._stamp:
                self._stamp = stamp
                try:
                    self.rules = parse_rules(self.path.read_text(), self.path)
                    self.reload_error = None
                    logger.info("risk profiles reloaded from %s: %d rule(s)", self.path, len(self.rules))
                except (OSError, RiskProfileError) as err:
                    self.reload_error = str(err)
                    logger.error("risk profiles not reloaded, the %d rule(s) in force stay: %s", len(self.rules), err)
        return self.rules

    def describe(self) -> dict:
        rules = self.current()
        return {
            "path": str(self.path),
            "rules": [{"name": r.name, "lane": r.lane, "reason": r.reason} for r in rules],
            "reload_error": self.reload_error,
        }
