"""The versions the test suite runs on, and whether users get the same.

``constraints.txt`` pins every package a development install resolves to
(``-e '.[dev]'``); ``make test`` installs with ``pip install -c
constraints.txt``, so CI and every developer test the same versions.
pyproject.toml keeps ranges for users.

    python scripts/lock.py write   # re-resolve today's versions into constraints.txt (make lock)
    python scripts/lock.py check   # does a fresh user install stay within them? (make test)

``check`` resolves what ``pip install 'rtkit[redis,pandas,widgets,jupyter,record]'``
would install today (pip's own resolver, dry run, nothing installed) and
fails when a package is missing from constraints.txt or comes in another
release series than the tests ran on (another major version; another minor
one for 0.x), so a new major release of a dependency turns ``make test`` red
before a user meets it untested. Newer releases within a series are listed
but pass. When PyPI cannot be reached, it warns and passes, except under CI.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "constraints.txt"
USER_EXTRAS = (
    "redis",
    "pandas",
    "widgets",
    "jupyter",
    "record",
    "mqtt",
    "nats",
    "metrics",
    "amqp",
    "postgres",
)
HEADER = """\
# The versions `make test` installs (pip install -c constraints.txt -e '.[dev]'),
# resolved on Python {python} by `make lock` (scripts/lock.py write).
# Refresh deliberately: make lock, then make test, and commit both.
"""


# What pip says when it cannot reach an index at all.
_OFFLINE = (
    "NewConnectionError",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "ConnectTimeoutError",
)


class ResolveError(Exception):
    """pip could not resolve; ``offline`` when it could not reach an index."""

    def __init__(self, message: str, offline: bool) -> None:
        super().__init__(message)
        self.offline = offline


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(extras: tuple[str, ...]) -> list[str]:
    """rtkit's dependencies plus those of ``extras``, from pyproject.toml."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in extras:
        reqs += project["optional-dependencies"][extra]
    return reqs


def resolve(reqs: list[str]) -> dict[str, str]:
    """{canonical name: version} that ``pip install reqs`` would install now,
    in a fresh environment of this Python."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed"]
        cmd += ["--quiet", "--report", str(report), *reqs]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            err = done.stderr.strip()
            offline = any(sign in err for sign in _OFFLINE)
            raise ResolveError(err[-3000:], offline)
        install = json.loads(report.read_text())["install"]
    return {canonical(i["metadata"]["name"]): i["metadata"]["version"] for i in install}


def read_constraints() -> dict[str, str]:
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            pins[canonical(req.name)] = spec.version
    return pins


def series(version: str) -> tuple[int, ...]:
    """Releases of one series are meant to be compatible: 2.x.y, or 0.14.y."""
    release = Version(version).release
    return release[:2] if release[0] == 0 else release[:1]


def write() -> int:
    pins = resolve(requirements((*USER_EXTRAS, "dev")))
    pins.pop("rtkit", None)
    python = ".".join(map(str, sys.version_info[:2]))
    lines = [f"{name}=={version}" for name, version in sorted(pins.items())]
    CONSTRAINTS.write_text(HEADER.format(python=python) + "\n".join(lines) + "\n")
    print(f"constraints.txt: {len(lines)} packages pinned")
    return 0


def check() -> int:
    extras = ",".join(USER_EXTRAS)
    try:
        fresh = resolve(requirements(USER_EXTRAS))
    except ResolveError as exc:
        if exc.offline and not os.environ.get("CI"):
            print(f"lock check skipped: PyPI could not be reached\n{exc}", file=sys.stderr)
            return 0
        print(f"lock check: pip could not resolve rtkit[{extras}]:\n{exc}", file=sys.stderr)
        return 1
    tested = read_constraints()
    untested, newer = [], []
    for name, version in sorted(fresh.items()):
        pinned = tested.get(name)
        if pinned is None:
            untested.append(f"{name} {version} (not in constraints.txt)")
        elif series(version) != series(pinned):
            untested.append(f"{name} {version} (tests ran on {pinned})")
        elif version != pinned:
            newer.append(f"{name} {version} (tests ran on {pinned})")
    for line in newer:
        print(f"lock check: newer within its series: {line}")
    if untested:
        print(
            f"lock check: a fresh `pip install 'rtkit[{extras}]'` gets releases "
            "the tests never ran on:",
            *(f"    {line}" for line in untested),
            "Run `make lock` and `make test` to test them (fix what breaks, or "
            "bound the range in pyproject.toml), then commit constraints.txt.",
            sep="\n",
            file=sys.stderr,
        )
        return 1
    print(f"lock check: a fresh install of rtkit[{extras}] ({len(fresh)} packages) is tested")
    return 0


def main(argv: list[str]) -> int:
    commands = {"write": write, "check": check}
    if len(argv) != 1 or argv[0] not in commands:
        print("usage: python scripts/lock.py write|check", file=sys.stderr)
        return 2
    return commands[argv[0]]()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
