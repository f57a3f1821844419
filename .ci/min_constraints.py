"""Print a pip constraints file pinning every declared dependency floor (``>=X``) to ``==X``.

CI installs the packages with it (``./dev min-versions``) and runs the suite, so a floor that
does not install or does not work fails the build instead of a user's install.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

FIRST_PARTY = "runbook"


def floors(pyprojects: list[Path]) -> dict[str, str]:
    pins: dict[str, str] = {}
    for path in pyprojects:
        project = tomllib.loads(path.read_text())["project"]
        reqs = list(project.get("dependencies", []))
        for extra in project.get("optional-dependencies", {}).values():
            reqs.extend(extra)
        for text in reqs:
            req = Requirement(text)
            if req.name.startswith(FIRST_PARTY):
                continue
            for spec in req.specifier:
                if spec.operator == ">=":
                    name = req.name.lower()
                    # Two packages may declare different floors: the higher one is the real one.
                    if name not in pins or _key(spec.version) > _key(pins[name]):
                        pins[name] = spec.version
    return pins


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def main(root: Path) -> None:
    files = [root / "pyproject.toml", *sorted(root.glob("plugins/*/pyproject.toml"))]
    for name, version in sorted(floors(files).items()):
        print(f"{name}=={version}")
        if name == "psycopg":
            print(f"psycopg-binary=={version}")  # the [binary] extra follows its parent


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "."))
