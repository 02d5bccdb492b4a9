"""Where every benchmark writes its figures: JSON with the machine and git revision."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any


def write_results(path: Path, payload: dict[str, Any]) -> None:
    sha = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    record = {
        **payload,
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "git": sha.stdout.strip(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, ensure_ascii=False), encoding="utf-8")
