"""The requirements a board needs that a pip report resolved on another machine left out.

pip's ``--python-version`` and ``--platform`` pick wheels for the board, but pip evaluates environment
markers (``tomli; python_version < "3.11"``, ``platform_machine == "aarch64"``) against the Python that
runs it: fetched with Python 3.11 for JetPack 6's 3.10, the folder lacked tomli and async-timeout, and
the board's offline install failed ("No matching distribution found for tomli>=2.0", a review).
board-wheels.sh runs this on pip's report and resolves again with what it prints, until nothing is missing.

    python3 board_wheels_missing.py REPORT.json PYTHON_VERSION ARCH   # one requirement a line
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any

try:
    from packaging.requirements import Requirement
except ImportError:  # a machine with pip but without packaging: pip carries its own copy
    from pip._vendor.packaging.requirements import Requirement  # type: ignore[no-redef,assignment]


def board_environment(python_version: str, arch: str) -> dict[str, str]:
    """The marker environment of a board's CPython on Linux."""
    return {
        "implementation_name": "cpython", "platform_python_implementation": "CPython",
        "python_version": python_version, "python_full_version": f"{python_version}.0",
        "platform_machine": arch, "platform_system": "Linux", "sys_platform": "linux", "os_name": "posix",
    }


def _name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def missing_requirements(report: Mapping[str, Any], environment: Mapping[str, str]) -> list[str]:
    """The requirements, without markers, that the board's environment needs from the packages in
    ``report`` (pip's ``--report`` JSON) and that the report does not install."""
    installs = {_name(item["metadata"]["name"]): item for item in report.get("install", [])}
    missing: dict[str, str] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [(name, frozenset(item.get("requested_extras") or ())) for name, item in installs.items()
            if item.get("requested")]
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        for text in installs[name]["metadata"].get("requires_dist") or ():
            requirement = Requirement(text)
            if not _applies(requirement, environment, extras):
                continue
            wanted = _name(requirement.name)
            if wanted in installs:
                todo.append((wanted, frozenset(requirement.extras)))
            elif wanted not in missing:
                requirement.marker = None
                missing[wanted] = str(requirement)
    return sorted(missing.values())


def _applies(requirement: Requirement, environment: Mapping[str, str], extras: Iterable[str]) -> bool:
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({**environment, "extra": extra}) for extra in (*extras, ""))


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as f:
        found = missing_requirements(json.load(f), board_environment(sys.argv[2], sys.argv[3]))
    for requirement in found:
        print(requirement)
