"""ResultCache: a least-recently-used map from a query to the prediction it got.

The key is what decides the answer: the normalised text (``qroute.table.normalise``,
the rule the table's rows went through: Unicode NFC, runs of whitespace as one space),
the allowed labels as given, and top_labels. Every entry belongs to one scope, the
(config version, index version) pair that computed it: when the router moves to another
scope (a config reload, a newly published index) the cache is emptied, so an answer is
never served by a configuration or an index that did not compute it.

Only the prediction is kept: anything a transport adds per request (an id, timings) is
added after the cache, by whoever answers the request.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from qroute.table import normalise
from qroute.types import Prediction, Query

__all__ = ["CacheKey", "ResultCache", "Scope"]

CacheKey = tuple[str, tuple[str, ...], int]
# (config version, index version)
Scope = tuple[str, str]


def _key(query: Query) -> CacheKey:
    return normalise(query.text), query.allowed_labels, query.top_labels


class ResultCache:
    """At most ``size`` predictions (0: off). ``on_lookup`` is told "hit" or "miss" for
    every lookup while the cache is on. Not thread-safe: one event loop uses it."""

    def __init__(self, size: int, on_lookup: Callable[[str], None] | None = None) -> None:
        self._entries: OrderedDict[CacheKey, Prediction] = OrderedDict()
        self._size = size
        self._scope: Scope | None = None
        self._on_lookup = on_lookup

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size(self) -> int:
        return self._size

    def resize(self, size: int) -> None:
        """Keep at most ``size`` entries from now on (the most recently used)."""
        self._size = size
        while len(self._entries) > size:
            self._entries.popitem(last=False)

    def enter(self, scope: Scope) -> None:
        """Serve ``scope`` from now on; entries of any other scope are dropped."""
        if scope != self._scope:
            self._entries.clear()
            self._scope = scope

    def get(self, query: Query) -> Prediction | None:
        if not self._size:
            return None
        key = _key(query)
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
        if self._on_lookup is not None:
            self._on_lookup("miss" if found is None else "hit")
        return found

    def put(self, query: Query, prediction: Prediction) -> None:
        """Keep ``prediction`` for ``query`` if it was computed in the current scope."""
        if not self._size or (prediction.config_version, prediction.index_version) != self._scope:
            return
        key = _key(query)
        self._entries[key] = prediction
        self._entries.move_to_end(key)
        if len(self._entries) > self._size:
            self._entries.popitem(last=False)
