"""The tuned values written into the config file: the chosen router and zero-shot
settings, the calibration knots, and the ``tuned:`` section that records what they were
chosen on and what they promise, keeping the file's comments, key order and every other
key."""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from qroute.atomicfile import replace_file
from qroute.evaluation.crossval import CrossValidated
from qroute.evaluation.tune import Choice

__all__ = ["write_tuned"]


def write_tuned(
    path: str | Path,
    choice: Choice,
    *,
    encoder: str,
    index_version: str,
    objective: str,
    data: str,
    validated: CrossValidated | None = None,
    calibration: Mapping[str, Sequence[tuple[float, float]]] | None = None,
) -> None:
    """Write the chosen values into the YAML config at ``path``, keeping its comments,
    key order and every key this does not set. With ``validated`` the figures are the
    held-out ones with their ranges; ``calibration`` replaces router.calibration."""
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.preserve_quotes = True
    path = Path(path)
    document: Any = yaml.load(path.read_text(encoding="utf-8")) if path.exists() else None
    if document is None:
        from ruamel.yaml.comments import CommentedMap

        document = CommentedMap()
    router = document.setdefault("router", {})
    router["k"] = choice.k
    router["similarity_threshold"] = round(choice.similarity_threshold, 4)
    router["min_margin"] = round(choice.min_margin, 4)
    if choice.vote_weight is not None:
        router["vote_weight"] = round(choice.vote_weight, 4)
    router["label_thresholds"] = {
        k: round(v, 4) for k, v in sorted(choice.label_thresholds.items())
    }
    if calibration is not None:
        from ruamel.yaml.comments import CommentedSeq

        def knot(x: float, y: float) -> CommentedSeq:
            pair = CommentedSeq([x, y])
            pair.fa.set_flow_style()  # one "- [score, probability]" line per knot
            return pair

        router["calibration"] = {
            path: [knot(x, y) for x, y in knots] for path, knots in calibration.items()
        }
    document.setdefault("zero_shot", {})["threshold"] = round(choice.zero_shot_threshold, 4)
    document["tuned"] = {
        "encoder": encoder,
        "index_version": index_version,
        "objective": objective,
        "data": data,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "figures": validated.figures if validated else choice.figures(),
        "ranges": {k: [low, high] for k, (low, high) in validated.ranges.items()}
        if validated
        else {},
        "folds": validated.folds if validated else 0,
    }
    rendered = io.StringIO()
    yaml.dump(document, rendered)
    _replace(path, rendered.getvalue())


def _replace(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all (``replace_file``). The router polls its config
    file and hot-reloads any valid content, and an empty or truncated file is valid (the
    defaults): a failed or interrupted write must never be what it reads."""
    try:
        replace_file(path, text)
    except PermissionError:
        if not os.access(path.parent, os.W_OK) and os.access(path, os.W_OK):
            # A writable file in a folder we may not create files in: in place, as
            # before (the text is complete, so only the write itself can be cut short).
            path.write_text(text, encoding="utf-8")
            return
        raise
