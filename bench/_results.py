"""What the benchmarks share: the JSON results writer (with the machine and git
revision), writing labelled rows as a CSV table for `run_index`, and an encoder that
encodes each distinct text once (optionally kept on disk between runs)."""

from __future__ import annotations

import csv
import json
import os
import platform
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt


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


class CachedEncoder:
    """The real encoder, each distinct text encoded once: folds, rounds and re-indexes
    share the vectors (the model's own, so the figures are too). With ``path`` they are
    kept on disk for a later run, tagged with the encoder's fingerprint (another
    encoder's file is ignored)."""

    def __init__(self, inner: Any, path: Path | None = None) -> None:
        self.inner = inner
        self.path = path
        self.vectors: dict[str, npt.NDArray[np.float32]] = {}
        self.encoded = 0
        self._unsaved = False
        if path is not None and path.exists():
            with np.load(path, allow_pickle=False) as saved:
                if "fingerprint" in saved and str(saved["fingerprint"]) == inner.fingerprint:
                    self.vectors = dict(zip(saved["texts"].tolist(), saved["vectors"], strict=True))

    @property
    def dimension(self) -> int:
        return int(self.inner.dimension)

    @property
    def fingerprint(self) -> str:
        return str(self.inner.fingerprint)

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        missing = [t for t in dict.fromkeys(texts) if t not in self.vectors]
        if missing:
            self.encoded += len(missing)
            self.vectors.update(zip(missing, self.inner.encode(missing), strict=True))
            self._unsaved = True
        return np.stack([self.vectors[t] for t in texts]).astype(np.float32)

    def save(self) -> None:
        """Write the vectors out (after a whole index or search pass: not per batch)."""
        if self.path is None or not self._unsaved:
            return
        self._unsaved = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        texts = list(self.vectors)
        with self.path.open("wb") as handle:
            np.savez(
                handle,
                fingerprint=np.array(self.fingerprint),
                texts=np.array(texts),
                vectors=np.stack([self.vectors[t] for t in texts]),
            )
