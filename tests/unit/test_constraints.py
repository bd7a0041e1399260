"""constraints.txt pins every distribution the project installs, as the tests ran them."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata

from core.release.package import (
    CODE_REQUIREMENTS,
    CONSTRAINTS_FILE,
    LAYER_REQUIREMENTS,
    PROJECT_ROOT,
)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins() -> dict[str, str]:
    out = {}
    for line in (PROJECT_ROOT / CONSTRAINTS_FILE).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"not a pin: {line!r}"
            out[canonical(name)] = version.strip()
    return out


def test_every_declared_dependency_is_pinned_at_the_installed_version() -> None:
    """A dependency added to pyproject.toml needs `make constraints` (and its diff reviewed)."""
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    declared = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    names = {canonical(re.split(r"[\[<>=!~ ;]", d, maxsplit=1)[0]) for d in declared}
    pinned = pins()
    missing = sorted(names - set(pinned))
    assert not missing, f"not in {CONSTRAINTS_FILE}: {missing}; run make constraints"
    for name in names:
        assert pinned[name] == metadata.version(name), name


def test_what_lambda_ships_is_pinned() -> None:
    pinned = pins()
    for name in (*LAYER_REQUIREMENTS, *CODE_REQUIREMENTS, "botocore", "s3transfer"):
        assert canonical(name) in pinned, name
