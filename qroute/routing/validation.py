"""What a query must be before any classification runs: the request-level rules, one
owner for the server, in-process callers and feedback."""

from __future__ import annotations

from collections.abc import Sequence

from qroute.config import RouterSettings
from qroute.errors import InvalidQuery, preview
from qroute.routing.published import IndexState
from qroute.types import Query, is_blank

__all__ = ["validate_queries", "validate_query"]


def validate_query(query: Query, router: RouterSettings, index: IndexState | None) -> None:
    """Raise InvalidQuery, naming the field, for a request no classification can
    answer. Echoed labels are bounded (see ``preview``)."""
    if is_blank(query.text):
        raise InvalidQuery("text is empty", "text")
    if len(query.text) > router.max_text_chars:
        raise InvalidQuery(
            f"text has {len(query.text)} characters; the limit is {router.max_text_chars} "
            "(router.max_text_chars)",
            "text",
        )
    if query.top_labels < 0:
        raise InvalidQuery("top_labels must not be negative", "top_labels")
    if len(query.allowed_labels) > router.max_allowed_labels:
        raise InvalidQuery(
            f"allowed_labels lists {len(query.allowed_labels)} labels; the limit is "
            f"{router.max_allowed_labels} (router.max_allowed_labels)",
            "allowed_labels",
        )
    if query.allowed_labels and index is not None:
        known = set(index.labels)
        unknown = sorted(label for label in set(query.allowed_labels) if label not in known)
        if unknown:
            raise InvalidQuery(
                f"unknown allowed_labels {preview(unknown)}; index {index.version} "
                f"knows {len(index.labels)} labels",
                "allowed_labels",
            )


def validate_queries(
    queries: Sequence[Query], router: RouterSettings, index: IndexState | None
) -> None:
    """``validate_query`` each query; raise one InvalidQuery whose violations carry the
    position of every bad query."""
    errors = []
    for position, query in enumerate(queries):
        try:
            validate_query(query, router, index)
        except InvalidQuery as exc:
            errors.append(exc.at(position))
    if len(errors) == 1 and len(queries) == 1:
        raise errors[0]
    if errors:
        violations = [v for error in errors for v in error.violations]
        shown = "; ".join(f"#{v.index}: {v.description}" for v in violations[:3])
        more = f" and {len(violations) - 3} more" if len(violations) > 3 else ""
        raise InvalidQuery(
            f"{len(errors)} of {len(queries)} queries are invalid: {shown}{more}",
            violations=violations,
        )
