"""qroute's errors. Core raises these; each app maps them to its own surface
(``server/errors.py`` to gRPC status codes, ``qroute.cli`` to exit codes).

QrouteError
 ├── ConfigError          the config file or an override is invalid (names the field)
 ├── TableError           a row of the labelled table is invalid (names file:row and field)
 ├── ModelLoadError       a model could not be found locally nor fetched from the hub
 ├── InvalidQuery         the request itself is unusable (empty or over-long text)
 ├── NotIndexed           no index version has been published yet
 │    ├── VersionMissing   the version being searched was dropped after a newer one was published
 │    ├── EncoderMismatch  the published version was built with another encoder
 │    └── IndexCorrupt     the published version's files cannot be read
 ├── StoreUnavailable     the vector store cannot be reached
 ├── NotReady             the router is still loading its models
 ├── Overloaded           too many requests are queued; retry later
 ├── DeadlineExceeded     the caller's deadline passed before the work started
 └── IndexWriteError      a new index version could not be written or published
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DeadlineExceeded",
    "EncoderMismatch",
    "IndexCorrupt",
    "IndexWriteError",
    "InvalidQuery",
    "ModelLoadError",
    "NotIndexed",
    "NotReady",
    "Overloaded",
    "QrouteError",
    "StoreUnavailable",
    "TableError",
    "VersionMissing",
]


class QrouteError(Exception):
    """Base of every error qroute raises on purpose."""


class ConfigError(QrouteError):
    pass


class TableError(QrouteError):
    """One or more invalid rows; ``problems`` lists each as ``file:row: field: reason``."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        if len(problems) == 1:
            super().__init__(problems[0])  # one line, as the CLI prints errors
            return
        shown = "\n".join(f"  {p}" for p in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        super().__init__(f"{len(problems)} invalid row(s) in the table:\n{shown}{more}")


class ModelLoadError(QrouteError):
    pass


class InvalidQuery(QrouteError):
    pass


class NotIndexed(QrouteError):
    pass


class StoreUnavailable(QrouteError):
    pass


class IndexWriteError(QrouteError):
    pass


class VersionMissing(NotIndexed):
    """The index version being searched was dropped (a newer one was published)."""


class NotReady(QrouteError):
    pass


class Overloaded(QrouteError):
    pass


class DeadlineExceeded(QrouteError):
    pass


class EncoderMismatch(NotIndexed):
    pass


class IndexCorrupt(NotIndexed):
    """A version's own files cannot be read (e.g. a damaged ``qroute.json``)."""
