"""qroute_client's typed results carry every field of ClassifyResponse, and `qroute classify
--json` prints them as protobuf's JSON mapping always has."""

from __future__ import annotations

import dataclasses
import json

from google.protobuf import json_format
from qroute_client import Classification, DecisionPath, FallbackReason, IndexInfo
from qroute_client.v1 import router_pb2 as pb

from qroute.cli.router import format_info, format_response


def _response() -> pb.ClassifyResponse:
    return pb.ClassifyResponse(
        label="금융",
        confidence=0.91,
        path=pb.DECISION_PATH_ZERO_SHOT,
        reason="zero-shot: 금융 0.91 >= 0.50",
        neighbours=[
            pb.Neighbour(text="a", label="금융", similarity=0.7, row_id="r1"),
            pb.Neighbour(
                text="b",
                label="날씨",
                similarity=0.6,
                row_id="r2",
                dense_similarity=0.55,
                lexical_similarity=0.8,
            ),
        ],
        knn_scores=[pb.LabelScore(label="금융", score=0.7)],
        zero_shot_scores=[pb.LabelScore(label="금융", score=0.91)],
        index_version="idx_v3",
        fallback_reasons=[pb.FALLBACK_REASON_LOW_SIMILARITY, pb.FALLBACK_REASON_AMBIGUOUS],
        thresholds=pb.Thresholds(similarity=0.8, margin=0.05, min_agreeing=2, zero_shot=0.5),
        config_version="abc123",
        top_labels=[
            pb.LabelScore(label="금융", score=0.91),
            pb.LabelScore(label="날씨", score=0.1),
        ],
        zero_shot_method="nli-independent",
        zero_shot_method_kind=pb.ZERO_SHOT_METHOD_NLI,
        request_id="0f3c",
    )


def test_every_response_field_has_a_result_field() -> None:
    fields = {f.name for f in dataclasses.fields(Classification)}
    assert fields == {f.name for f in pb.ClassifyResponse.DESCRIPTOR.fields}


def test_results_convert_enums_floats_and_optional_fields() -> None:
    answer = Classification.from_pb(_response())
    assert answer.path is DecisionPath.ZERO_SHOT
    assert answer.fallback_reasons == (FallbackReason.LOW_SIMILARITY, FallbackReason.AMBIGUOUS)
    assert answer.confidence == 0.91  # float32 on the wire, its shortest decimal here
    assert answer.neighbours[0].dense_similarity is None
    assert answer.neighbours[1].lexical_similarity == 0.8
    # A value a newer router may add reads as UNSPECIFIED, not an error.
    newer = pb.ClassifyResponse(path=99)  # type: ignore[arg-type]
    assert Classification.from_pb(newer).path is DecisionPath.UNSPECIFIED


def test_json_output_is_protobufs_json_mapping() -> None:
    response = _response()
    printed = json.loads(format_response("q", Classification.from_pb(response), as_json=True))
    expected = json_format.MessageToDict(
        response, always_print_fields_with_no_presence=True, preserving_proto_field_name=True
    )
    assert printed == {"text": "q", **expected}


def test_explain_names_the_decision() -> None:
    text = format_response("q", Classification.from_pb(_response()), as_json=False, explain=True)
    assert "q\n  -> 금융  [ZERO_SHOT, confidence 0.91, index idx_v3]" in text
    assert "fallback reasons: LOW_SIMILARITY, AMBIGUOUS" in text
    assert "0.600 (dense 0.550, lexical 0.800)  날씨" in text


def test_index_info_json_is_protobufs_json_mapping() -> None:
    response = pb.GetIndexInfoResponse(
        index_version="idx_v3",
        labels=["금융", "날씨"],
        retrieval_mode=pb.RETRIEVAL_MODE_HYBRID,
        encoder_fingerprint="hybrid:e+l",
        rows=12,
        label_count=2,
        config_version="abc",
        limits=pb.RequestLimits(max_text_chars=10, max_batch_texts=20, max_allowed_labels=30),
    )
    printed = json.loads(format_info(IndexInfo.from_pb(response), as_json=True))
    expected = json_format.MessageToDict(
        response, always_print_fields_with_no_presence=True, preserving_proto_field_name=True
    )
    expected["rows"] = int(expected["rows"])  # int64 is a string in proto JSON
    assert printed == expected


def test_every_index_info_field_has_a_result_field() -> None:
    fields = {f.name for f in dataclasses.fields(IndexInfo)}
    assert fields == {f.name for f in pb.GetIndexInfoResponse.DESCRIPTOR.fields}
