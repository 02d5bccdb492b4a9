"""What the benchmarks share: the JSON results writer (with the machine and git
revision), and writing labelled rows as a CSV table for `run_index`."""

from __future__ import annotations

import csv
import json
import os
import platform
import subprocess
from collections.abc import Iterable
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


def write_table(path: Path, rows: Iterable[Any]) -> Path:
    """Labelled examples (``.text``, ``.label``) as a CSV table the indexer reads."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows((e.text, e.label) for e in rows)
    return path
