"""Build hook: bundles the widgets' front-end (npm ci && esbuild) into
rtkit/widgets/static/ for every wheel, editable installs included.

The bundle is a build output (gitignored, never committed). It is rebuilt only
when a source is newer than it, so repeated builds cost nothing.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

OUTPUTS = ("widgets.js",)


class WidgetsBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        root = Path(self.root)
        js = root / "rtkit" / "widgets" / "js"
        static = root / "rtkit" / "widgets" / "static"
        build_data["artifacts"].append("rtkit/widgets/static/")
        if not (js / "package.json").is_file():
            return  # an sdist that already carries the bundle
        sources = [js / "package.json", js / "package-lock.json", *(js / "src").glob("*.js")]
        outputs = [static / name for name in OUTPUTS]
        newest = max(p.stat().st_mtime for p in sources if p.exists())
        if all(p.exists() for p in outputs) and min(p.stat().st_mtime for p in outputs) >= newest:
            return
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("building rtkit's widgets needs Node.js and npm (Node >= 18)")
        lock = js / "package-lock.json"
        stamp = js / "node_modules" / ".package-lock.json"
        if not stamp.exists() or stamp.stat().st_mtime < lock.stat().st_mtime:
            subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--silent"], cwd=js, check=True)
        subprocess.run([npm, "run", "--silent", "build"], cwd=js, check=True)
