"""qroute's errors. Core raises these; each app maps them to its own surface
(``server/errors.py`` to gRPC status codes, ``qroute.cli`` to exit codes).

QrouteError
 ├── ConfigError          the config file or an override is invalid (names the field)
 ├── TableError           a row of the labelled table is invalid (names file:row and field)
 ├── ModelLoadError       a model could not be found locally nor fetched from the hub
 ├── MissingDependency    an optional package (an extra) the command needs is not installed
 ├── InvalidQuery         the request itself is unusable (empty or over-long text);
 │                        ``violations`` names each bad field
 ├── NotIndexed           no index version has been published yet
 │    ├── VersionMissing   the version being searched was dropped after a newer one was published
 │    └── EncoderMismatch  the published version was built with another encoder
 ├── StoreUnavailable     the vector store cannot be reached
 │    └── IndexRejected    the published version cannot be served (unreadable, corrupt, unpublished)
 │         └── IndexCorrupt its own files or metadata cannot be read
 ├── NotReady             the router is still loading its models, or shutting down
 ├── Overloaded           too many requests are queued; retry later
 ├── DeadlineExceeded     the caller's deadline passed before the work started
 ├── IndexWriteError      a new index version could not be written or published
 ├── FeatureDisabled      the request needs a feature the router's config leaves off
 └── BindError            the router cannot listen on its address (in use, or not local)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "BindError",
    "ConfigError",
    "DeadlineExceeded",
    "EncoderMismatch",
    "FeatureDisabled",
    "IndexCorrupt",
    "IndexRejected",
    "IndexWriteError",
    "InvalidQuery",
    "MissingDependency",
    "ModelLoadError",
    "NotIndexed",
    "NotReady",
    "Overloaded",
    "QrouteError",
    "StoreUnavailable",
    "TableError",
    "VersionMissing",
    "Violation",
    "preview",
]

# An error message echoes at most this many items of a list, each cut to _ITEM_CHARS:
# a request may carry thousands of labels, and a status message travels in a trailer.
_SHOWN = 5
_ITEM_CHARS = 40


def preview(items: Iterable[str], shown: int = _SHOWN) -> str:
    """``items`` for a message: the first ``shown``, each cut to a few dozen characters,
    then "and N more" (``'a', 'b' and 3 more``)."""
    items = list(items)
    cut = [repr(i if len(i) <= _ITEM_CHARS else i[:_ITEM_CHARS] + "…") for i in items[:shown]]
    more = f" and {len(items) - shown} more" if len(items) > shown else ""
    return ", ".join(cut) + more


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


class MissingDependency(QrouteError):
    pass


@dataclass(frozen=True, slots=True)
class Violation:
    """One bad field of a query: ``field`` as the request spells it ("text",
    "allowed_labels"; "requests" for the request as a whole), ``index`` the query's
    position among those submitted together (None: not about one query)."""

    field: str
    description: str
    index: int | None = None


class InvalidQuery(QrouteError):
    """The request is unusable. Raised for one field (``InvalidQuery("text is empty",
    "text")``) or, for several queries at once, with every ``violations``."""

    def __init__(
        self, description: str, field: str = "", *, violations: Sequence[Violation] = ()
    ) -> None:
        self.violations = tuple(violations) or (Violation(field, description),)
        super().__init__(description)

    def at(self, index: int) -> InvalidQuery:
        """This error, about the query at ``index`` of those submitted together."""
        violations = [Violation(v.field, v.description, index) for v in self.violations]
        return InvalidQuery(str(self), violations=violations)


class NotIndexed(QrouteError):
    """No index version can be searched. ``resource`` names what is missing or
    unusable: the collection nothing was published to, or the version."""

    def __init__(self, message: str, resource: str = "") -> None:
        super().__init__(message)
        self.resource = resource


class StoreUnavailable(QrouteError):
    pass


class IndexWriteError(QrouteError):
    pass


class VersionMissing(NotIndexed):
    """The index version being searched was dropped (a newer one was published)."""


class IndexRejected(StoreUnavailable):
    """The published index version cannot be served: its pointer or metadata cannot be
    read, it fails to open or to answer a probe search, or the pointer is gone. The
    previous version, if any, keeps serving. ``reason`` is a short metric label."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class IndexCorrupt(IndexRejected):
    """A version's own files cannot be read: a damaged ``qroute.json``, or metadata not
    in the format the indexer writes."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "read")


class NotReady(QrouteError):
    pass


class Overloaded(QrouteError):
    pass


class DeadlineExceeded(QrouteError):
    pass


class EncoderMismatch(NotIndexed):
    pass


class BindError(QrouteError):
    pass


class FeatureDisabled(QrouteError):
    """The request needs a feature this router's config leaves off (``review.enabled``)."""
