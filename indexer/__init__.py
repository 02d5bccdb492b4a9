"""The indexing job: labelled table -> embeddings -> a new published index version."""

from .job import IndexReport, VersionRow, list_versions, rollback, run_index

__all__ = ["IndexReport", "VersionRow", "list_versions", "rollback", "run_index"]
