"""The config file: where it is, and reading it as YAML 1.2 (ruamel.yaml; ``no``, ``off``
are strings) with every problem named by file and line."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from qroute.errors import ConfigError

__all__ = ["DEFAULT_CONFIG_FILE", "config_file", "read_config_file"]

DEFAULT_CONFIG_FILE = "qroute.yaml"


def _duplicate_key(node: Any, where: str = "") -> tuple[str, int, int] | None:
    """The first key that a YAML mapping repeats: (dotted key, first line, second line)."""
    from ruamel.yaml.nodes import MappingNode, SequenceNode

    if isinstance(node, MappingNode):
        first: dict[Any, int] = {}
        for key, value in node.value:
            name = f"{where}.{key.value}" if where else str(key.value)
            if key.value in first:
                return name, first[key.value], key.start_mark.line + 1
            first[key.value] = key.start_mark.line + 1
            found = _duplicate_key(value, name)
            if found:
                return found
    elif isinstance(node, SequenceNode):
        for index, item in enumerate(node.value):
            found = _duplicate_key(item, f"{where}.{index}")
            if found:
                return found
    return None


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse a YAML config file into a mapping; raises ConfigError naming the file.

    YAML 1.2 (ruamel.yaml, which also writes the file in ``qroute tune --write``): ``no``,
    ``off`` and ``yes`` are strings, as label names and ``zero_shot.method: off`` need.
    A key given twice is an error, not the last value silently winning.
    """
    from ruamel.yaml import YAML
    from ruamel.yaml.constructor import DuplicateKeyError
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at "
            f"offset {exc.start}): point --config or QROUTE_CONFIG at the YAML config"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    yaml = YAML(typ="safe", pure=True)
    try:
        data = yaml.load(text)
    except DuplicateKeyError:
        found = _duplicate_key(yaml.compose(text))
        assert found is not None
        key, first, second = found
        raise ConfigError(
            f"config file {path}: {key} is set twice, on line {first} and line {second}: keep one"
        ) from None
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = " ".join(filter(None, (exc.context, exc.problem)))
        raise ConfigError(f"config file {path}{at} is not valid YAML: {problem}") from None
    except YAMLError as exc:
        problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"config file {path} is not valid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def config_file(path: str | Path | None = None) -> Path | None:
    """The config file in use: ``path``, else ``$QROUTE_CONFIG``, else ``./qroute.yaml``
    when it exists, else None (defaults and environment only)."""
    explicit = path if path is not None else os.environ.get("QROUTE_CONFIG")
    if explicit:
        return Path(explicit)
    default = Path(DEFAULT_CONFIG_FILE)
    return default if default.exists() else None
