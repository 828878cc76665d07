"""constraints.txt pins every package the app and its tests use, and this environment runs exactly those.

The app leans on a few libraries beyond their documented API (Flask-Babel's context, the `limits` memory
storage), so a clinic's server must get the releases the tests passed with, not whatever is newest on the day
it installs. These checks fail when pyproject.toml gains a dependency that constraints.txt does not pin, or when
the environment drifted from the pins (an install that bypassed the Makefile).
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "clinic-referral-portal"
EXTRAS = {"test", "bench"}


def pinned_versions() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        assert match, f"constraints.txt: {line!r} is not an exact pin (name==version)"
        pins[canonicalize_name(match.group(1))] = match.group(2)
    return pins


def required_distributions() -> set[str]:
    """Every distribution the project needs with its test and bench extras, followed through their requirements."""
    needed: set[str] = set()
    pending = [(PROJECT, frozenset(EXTRAS))]
    while pending:
        name, extras = pending.pop()
        for text in metadata.requires(name) or []:
            requirement = Requirement(text)
            marker = requirement.marker
            if marker is not None and not any(marker.evaluate({"extra": extra}) for extra in extras | {""}):
                continue
            dependency = canonicalize_name(requirement.name)
            if dependency in needed:
                continue
            needed.add(dependency)
            pending.append((dependency, frozenset(requirement.extras)))
    return needed


def test_every_package_the_project_needs_is_pinned():
    unpinned = required_distributions() - set(pinned_versions())
    assert not unpinned, f"not pinned in constraints.txt: {sorted(unpinned)} (make upgrade-deps writes them)"


def test_the_environment_runs_the_pinned_versions():
    pins = pinned_versions()
    drifted = {name: (metadata.version(name), pins[name]) for name in required_distributions()
               if name in pins and metadata.version(name) != pins[name]}
    assert not drifted, f"installed (left) differs from constraints.txt (right): {drifted}"
