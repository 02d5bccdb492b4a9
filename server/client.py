"""A small client for the router: ``qroute classify`` and ``qroute health`` use it."""

from __future__ import annotations

import json
from typing import Any

import grpc
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc

from qroute.v1 import router_pb2 as pb
from qroute.v1 import router_pb2_grpc

__all__ = ["check_health", "classify", "format_response"]


def classify(address: str, texts: list[str], timeout: float) -> list[pb.ClassifyResponse]:
    with grpc.insecure_channel(address) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        if len(texts) == 1:
            return [stub.Classify(pb.ClassifyRequest(text=texts[0]), timeout=timeout)]
        request = pb.ClassifyBatchRequest(requests=[pb.ClassifyRequest(text=t) for t in texts])
        return list(stub.ClassifyBatch(request, timeout=timeout).responses)


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


def format_response(text: str, response: pb.ClassifyResponse, *, as_json: bool) -> str:
    if as_json:
        return json.dumps({"text": text, **to_dict(response)}, ensure_ascii=False)
    path = pb.DecisionPath.Name(response.path).removeprefix("DECISION_PATH_")
    label = response.label or "(none of these)"
    where = f"{path}, confidence {response.confidence:.2f}, index {response.index_version}"
    lines = [
        f"{text}\n  -> {label}  [{where}]",
        f"  why: {response.reason}",
    ]
    for n in response.neighbours[:3]:
        lines.append(f"    {n.similarity:.3f}  {n.label:<10} {n.text}")
    if response.zero_shot_scores:
        scores = ", ".join(f"{s.label} {s.score:.2f}" for s in response.zero_shot_scores[:5])
        lines.append(f"  zero-shot: {scores}")
    return "\n".join(lines)
