"""Check what the built wheels contain: only their own package, typed, licensed, one version."""

from __future__ import annotations

import sys
import zipfile
from email.parser import Parser
from pathlib import Path


def check(wheel: Path) -> list[str]:
    problems = []
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        dist_info = next(n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info"))
        meta = Parser().parsestr(archive.read(f"{dist_info}/METADATA").decode())
    package = meta["Name"].replace("-", "_")
    tops = {n.split("/")[0] for n in names} - {dist_info}
    if tops != {package}:
        problems.append(f"ships {sorted(tops - {package})} besides {package}/")
    if f"{package}/py.typed" not in names:
        problems.append("no py.typed")
    if meta["License-Expression"] != "MIT":
        problems.append(f"License-Expression is {meta['License-Expression']!r}")
    if not any(n.startswith(f"{dist_info}/licenses/LICENSE") for n in names):
        problems.append("no LICENSE file")
    return [f"{wheel.name}: {p}" for p in problems]


def main(folder: Path) -> int:
    wheels = sorted(folder.glob("*.whl"))
    versions = {w.name.split("-")[1] for w in wheels}
    problems = [p for w in wheels for p in check(w)]
    if len(versions) != 1:
        problems.append(f"the wheels disagree on the version: {sorted(versions)}")
    for line in problems:
        print(f"check_wheels: {line}", file=sys.stderr)
    print(f"check_wheels: {len(wheels)} wheels, version {', '.join(sorted(versions))}")
    return 1 if problems or not wheels else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
