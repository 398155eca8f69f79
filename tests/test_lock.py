"""requirements.lock, which `make install` and the bento install from, holds every requirement of
pyproject.toml (the project's, and its test and bench extras) at a version the requirement allows:
a dependency added or narrowed in pyproject.toml without rewriting the lock fails here, not on a
fresh clone. The lock is written by the command the Makefile names."""

from __future__ import annotations

import tomllib

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import REPO

LOCK = REPO / "requirements.lock"
EXTRAS = ("test", "bench")


def _pins(environment: dict[str, str]) -> dict[str, str]:
    """name -> pinned version, of the lock's lines whose marker holds in `environment`."""
    pins = {}
    for line in LOCK.read_text().splitlines():
        if not line.strip() or line.startswith((" ", "#", "-")):
            continue
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate(environment):
            (pin,) = requirement.specifier
            assert pin.operator == "==", f"requirements.lock: {line!r} is not a pin"
            pins[canonicalize_name(requirement.name)] = pin.version
    return pins


def _requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    listed = list(project["dependencies"])
    for extra in EXTRAS:
        listed += project["optional-dependencies"][extra]
    return [Requirement(text) for text in listed]


def test_the_lock_pins_every_requirement_of_pyproject_at_an_allowed_version():
    for python in ("3.11", "3.12"):  # requires-python: the lock is universal
        environment = {**default_environment(), "python_version": python, "python_full_version": f"{python}.0"}
        pins = _pins(environment)
        for requirement in _requirements():
            if requirement.marker is not None and not requirement.marker.evaluate(environment):
                continue
            name = canonicalize_name(requirement.name)
            assert name in pins, f"requirements.lock lacks {requirement} (Python {python}): rewrite it (Makefile)"
            assert requirement.specifier.contains(pins[name], prereleases=True), (
                f"requirements.lock pins {name}=={pins[name]}, outside {requirement} (Python {python}): rewrite it"
            )


def test_the_lock_is_written_by_the_command_the_makefile_names():
    command = LOCK.read_text().splitlines()[1].removeprefix("#").strip()
    assert command.startswith("uv pip compile pyproject.toml ")
    assert f".venv/bin/{command}" in (REPO / "Makefile").read_text()
