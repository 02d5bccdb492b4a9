"""A small client for the router: ``qroute classify`` and ``qroute health`` use it."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import grpc
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc

from qroute.v1 import router_pb2 as pb
from qroute.v1 import router_pb2_grpc

__all__ = ["check_health", "classify", "format_response"]


def classify(
    address: str,
    texts: list[str],
    timeout: float,
    allowed_labels: list[str] | None = None,
    top_labels: int = 0,
) -> list[pb.ClassifyResponse]:
    requests = [
        pb.ClassifyRequest(text=t, allowed_labels=allowed_labels or [], top_labels=top_labels)
        for t in texts
    ]
    with grpc.insecure_channel(address) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        if len(requests) == 1:
            return [stub.Classify(requests[0], timeout=timeout)]
        batch = pb.ClassifyBatchRequest(requests=requests)
        return list(stub.ClassifyBatch(batch, timeout=timeout).responses)


def check_health(address: str, timeout: float, service: str = "") -> str:
    """The health status name (SERVING, NOT_SERVING, ...) of ``service`` at ``address``."""
    with grpc.insecure_channel(address) as channel:
        stub: Any = health_pb2_grpc.HealthStub(channel)
        response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


def to_dict(response: pb.ClassifyResponse) -> dict[str, Any]:
    return json_format.MessageToDict(
        response, always_print_fields_with_no_presence=True, preserving_proto_field_name=True
    )


def _name(enum: Any, value: int, prefix: str) -> str:
    return str(enum.Name(value)).removeprefix(prefix)


def _scores(scores: Iterable[pb.LabelScore], limit: int = 5) -> str:
    return ", ".join(f"{s.label} {s.score:.3f}" for s in list(scores)[:limit])


def format_response(
    text: str, response: pb.ClassifyResponse, *, as_json: bool, explain: bool = False
) -> str:
    """One answer for a person (``explain`` adds every field of the decision) or as JSON."""
    if as_json:
        return json.dumps({"text": text, **to_dict(response)}, ensure_ascii=False)
    path = _name(pb.DecisionPath, response.path, "DECISION_PATH_")
    label = response.label or "(none of these)"
    where = f"{path}, confidence {response.confidence:.2f}, index {response.index_version}"
    lines = [f"{text}\n  -> {label}  [{where}]", f"  why: {response.reason}"]
    if not explain:
        return "\n".join(lines)
    reasons = [_name(pb.FallbackReason, r, "FALLBACK_REASON_") for r in response.fallback_reasons]
    t = response.thresholds
    lines += [
        f"  fallback reasons: {', '.join(reasons) or 'none'}",
        f"  thresholds: similarity {t.similarity:.3f}, margin {t.margin:.3f}, "
        f"min agreeing {t.min_agreeing}, zero-shot {t.zero_shot:.3f}",
        f"  kNN label scores: {_scores(response.knn_scores)}",
    ]
    if response.zero_shot_method:
        lines.append(
            f"  zero-shot ({response.zero_shot_method}): {_scores(response.zero_shot_scores)}"
        )
    if len(response.top_labels) > 1:
        lines.append(f"  top labels: {_scores(response.top_labels, len(response.top_labels))}")
    lines.append("  neighbours:")
    for n in response.neighbours[:10]:
        parts = ""
        if n.HasField("dense_similarity") and n.HasField("lexical_similarity"):
            parts = f" (dense {n.dense_similarity:.3f}, lexical {n.lexical_similarity:.3f})"
        lines.append(f"    {n.similarity:.3f}{parts}  {n.label:<12} {n.text}  ({n.row_id})")
    if len(response.neighbours) > 10:
        lines.append(f"    ... {len(response.neighbours) - 10} more (--json shows all)")
    lines.append(f"  config {response.config_version}")
    return "\n".join(lines)
