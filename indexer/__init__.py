"""The indexing job: labelled table -> embeddings -> a new published index version."""

from indexer.job import IndexReport, run_index

__all__ = ["IndexReport", "run_index"]
