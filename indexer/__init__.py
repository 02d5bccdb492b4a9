"""The indexing job: labelled table -> embeddings -> a new published index version."""

from .job import IndexReport, run_index
from .versions import VersionRow, list_versions, rollback

__all__ = ["IndexReport", "VersionRow", "list_versions", "rollback", "run_index"]
