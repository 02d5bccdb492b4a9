"""Vector stores: the interface, its two implementations, and the one place that chooses."""

from __future__ import annotations

import math

from qroute.config import StoreSettings
from qroute.store.base import Point, VectorStore

__all__ = ["Point", "VectorStore", "open_store"]


def open_store(settings: StoreSettings) -> VectorStore:
    """A ServerStore for an http(s):// location, else an EmbeddedStore under that directory."""
    if settings.is_server:
        from qdrant_client import AsyncQdrantClient

        from qroute.store.server import ServerStore

        client = AsyncQdrantClient(
            url=settings.location,
            api_key=settings.api_key.get_secret_value() if settings.api_key else None,
            prefer_grpc=settings.prefer_grpc,
            grpc_port=settings.grpc_port,
            # Whole seconds, as the client takes them: int() made 0.5 a 0 s deadline.
            timeout=math.ceil(settings.timeout_s),
        )
        return ServerStore(
            client,
            settings.collection,
            settings.endpoint,
            shard_number=settings.shard_number,
            replication_factor=settings.replication_factor,
            write_consistency_factor=settings.write_consistency_factor,
            read_consistency=settings.read_consistency,
            hnsw_ef=settings.hnsw_ef,
        )
    from qroute.store.embedded import EmbeddedStore

    return EmbeddedStore(settings.location, settings.collection, hnsw_ef=settings.hnsw_ef)
