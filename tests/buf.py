"""The buf CLI (npm's @bufbuild/buf, locked in tools/buf/), installed by `npm ci` on
first use. Node and npm are part of the test environment (here and in CI): a test that
needs buf fails, never skips, when it cannot be installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / "tools" / "buf"
BUF = FOLDER / "node_modules" / ".bin" / "buf"


def buf() -> Path:
    """The path of the locked buf binary, installing it if needed."""
    if BUF.exists():
        return BUF
    npm = shutil.which("npm")
    assert npm is not None, "npm is not installed: the proto checks need node and npm"
    result = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--prefer-offline"],
        cwd=FOLDER,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"npm ci in tools/buf failed:\n{result.stderr}"
    assert BUF.exists(), f"npm ci in tools/buf installed no {BUF.relative_to(ROOT)}"
    return BUF
