from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DecisionPath(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DECISION_PATH_UNSPECIFIED: _ClassVar[DecisionPath]
    DECISION_PATH_KNN: _ClassVar[DecisionPath]
    DECISION_PATH_ZERO_SHOT: _ClassVar[DecisionPath]
    DECISION_PATH_NO_MATCH: _ClassVar[DecisionPath]

class FallbackReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FALLBACK_REASON_UNSPECIFIED: _ClassVar[FallbackReason]
    FALLBACK_REASON_LOW_SIMILARITY: _ClassVar[FallbackReason]
    FALLBACK_REASON_AMBIGUOUS: _ClassVar[FallbackReason]
    FALLBACK_REASON_FEW_AGREEING: _ClassVar[FallbackReason]

class ZeroShotMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ZERO_SHOT_METHOD_UNSPECIFIED: _ClassVar[ZeroShotMethod]
    ZERO_SHOT_METHOD_NLI: _ClassVar[ZeroShotMethod]
    ZERO_SHOT_METHOD_NLI_SINGLE: _ClassVar[ZeroShotMethod]
    ZERO_SHOT_METHOD_EMBEDDING: _ClassVar[ZeroShotMethod]

class RetrievalMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RETRIEVAL_MODE_UNSPECIFIED: _ClassVar[RetrievalMode]
    RETRIEVAL_MODE_DENSE: _ClassVar[RetrievalMode]
    RETRIEVAL_MODE_LEXICAL: _ClassVar[RetrievalMode]
    RETRIEVAL_MODE_HYBRID: _ClassVar[RetrievalMode]
DECISION_PATH_UNSPECIFIED: DecisionPath
DECISION_PATH_KNN: DecisionPath
DECISION_PATH_ZERO_SHOT: DecisionPath
DECISION_PATH_NO_MATCH: DecisionPath
FALLBACK_REASON_UNSPECIFIED: FallbackReason
FALLBACK_REASON_LOW_SIMILARITY: FallbackReason
FALLBACK_REASON_AMBIGUOUS: FallbackReason
FALLBACK_REASON_FEW_AGREEING: FallbackReason
ZERO_SHOT_METHOD_UNSPECIFIED: ZeroShotMethod
ZERO_SHOT_METHOD_NLI: ZeroShotMethod
ZERO_SHOT_METHOD_NLI_SINGLE: ZeroShotMethod
ZERO_SHOT_METHOD_EMBEDDING: ZeroShotMethod
RETRIEVAL_MODE_UNSPECIFIED: RetrievalMode
RETRIEVAL_MODE_DENSE: RetrievalMode
RETRIEVAL_MODE_LEXICAL: RetrievalMode
RETRIEVAL_MODE_HYBRID: RetrievalMode

class ClassifyRequest(_message.Message):
    __slots__ = ("text", "allowed_labels", "top_labels")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_LABELS_FIELD_NUMBER: _ClassVar[int]
    TOP_LABELS_FIELD_NUMBER: _ClassVar[int]
    text: str
    allowed_labels: _containers.RepeatedScalarFieldContainer[str]
    top_labels: int
    def __init__(self, text: _Optional[str] = ..., allowed_labels: _Optional[_Iterable[str]] = ..., top_labels: _Optional[int] = ...) -> None: ...

class ClassifyBatchRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[ClassifyRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[ClassifyRequest, _Mapping]]] = ...) -> None: ...

class Neighbour(_message.Message):
    __slots__ = ("text", "label", "similarity", "row_id", "dense_similarity", "lexical_similarity")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    ROW_ID_FIELD_NUMBER: _ClassVar[int]
    DENSE_SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    LEXICAL_SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    text: str
    label: str
    similarity: float
    row_id: str
    dense_similarity: float
    lexical_similarity: float
    def __init__(self, text: _Optional[str] = ..., label: _Optional[str] = ..., similarity: _Optional[float] = ..., row_id: _Optional[str] = ..., dense_similarity: _Optional[float] = ..., lexical_similarity: _Optional[float] = ...) -> None: ...

class LabelScore(_message.Message):
    __slots__ = ("label", "score")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    label: str
    score: float
    def __init__(self, label: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class Thresholds(_message.Message):
    __slots__ = ("similarity", "margin", "min_agreeing", "zero_shot")
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    MARGIN_FIELD_NUMBER: _ClassVar[int]
    MIN_AGREEING_FIELD_NUMBER: _ClassVar[int]
    ZERO_SHOT_FIELD_NUMBER: _ClassVar[int]
    similarity: float
    margin: float
    min_agreeing: int
    zero_shot: float
    def __init__(self, similarity: _Optional[float] = ..., margin: _Optional[float] = ..., min_agreeing: _Optional[int] = ..., zero_shot: _Optional[float] = ...) -> None: ...

class ClassifyResponse(_message.Message):
    __slots__ = ("label", "confidence", "path", "reason", "neighbours", "knn_scores", "zero_shot_scores", "index_version", "fallback_reasons", "thresholds", "config_version", "top_labels", "zero_shot_method", "zero_shot_method_kind", "request_id")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    NEIGHBOURS_FIELD_NUMBER: _ClassVar[int]
    KNN_SCORES_FIELD_NUMBER: _ClassVar[int]
    ZERO_SHOT_SCORES_FIELD_NUMBER: _ClassVar[int]
    INDEX_VERSION_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_REASONS_FIELD_NUMBER: _ClassVar[int]
    THRESHOLDS_FIELD_NUMBER: _ClassVar[int]
    CONFIG_VERSION_FIELD_NUMBER: _ClassVar[int]
    TOP_LABELS_FIELD_NUMBER: _ClassVar[int]
    ZERO_SHOT_METHOD_FIELD_NUMBER: _ClassVar[int]
    ZERO_SHOT_METHOD_KIND_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    label: str
    confidence: float
    path: DecisionPath
    reason: str
    neighbours: _containers.RepeatedCompositeFieldContainer[Neighbour]
    knn_scores: _containers.RepeatedCompositeFieldContainer[LabelScore]
    zero_shot_scores: _containers.RepeatedCompositeFieldContainer[LabelScore]
    index_version: str
    fallback_reasons: _containers.RepeatedScalarFieldContainer[FallbackReason]
    thresholds: Thresholds
    config_version: str
    top_labels: _containers.RepeatedCompositeFieldContainer[LabelScore]
    zero_shot_method: str
    zero_shot_method_kind: ZeroShotMethod
    request_id: str
    def __init__(self, label: _Optional[str] = ..., confidence: _Optional[float] = ..., path: _Optional[_Union[DecisionPath, str]] = ..., reason: _Optional[str] = ..., neighbours: _Optional[_Iterable[_Union[Neighbour, _Mapping]]] = ..., knn_scores: _Optional[_Iterable[_Union[LabelScore, _Mapping]]] = ..., zero_shot_scores: _Optional[_Iterable[_Union[LabelScore, _Mapping]]] = ..., index_version: _Optional[str] = ..., fallback_reasons: _Optional[_Iterable[_Union[FallbackReason, str]]] = ..., thresholds: _Optional[_Union[Thresholds, _Mapping]] = ..., config_version: _Optional[str] = ..., top_labels: _Optional[_Iterable[_Union[LabelScore, _Mapping]]] = ..., zero_shot_method: _Optional[str] = ..., zero_shot_method_kind: _Optional[_Union[ZeroShotMethod, str]] = ..., request_id: _Optional[str] = ...) -> None: ...

class ClassifyBatchResponse(_message.Message):
    __slots__ = ("responses",)
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    responses: _containers.RepeatedCompositeFieldContainer[ClassifyResponse]
    def __init__(self, responses: _Optional[_Iterable[_Union[ClassifyResponse, _Mapping]]] = ...) -> None: ...

class GetIndexInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RequestLimits(_message.Message):
    __slots__ = ("max_text_chars", "max_batch_texts", "max_allowed_labels")
    MAX_TEXT_CHARS_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_TEXTS_FIELD_NUMBER: _ClassVar[int]
    MAX_ALLOWED_LABELS_FIELD_NUMBER: _ClassVar[int]
    max_text_chars: int
    max_batch_texts: int
    max_allowed_labels: int
    def __init__(self, max_text_chars: _Optional[int] = ..., max_batch_texts: _Optional[int] = ..., max_allowed_labels: _Optional[int] = ...) -> None: ...

class GetIndexInfoResponse(_message.Message):
    __slots__ = ("index_version", "labels", "retrieval_mode", "encoder_fingerprint", "rows", "label_count", "config_version", "tuned_encoder_fingerprint", "limits", "uses_head")
    INDEX_VERSION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    RETRIEVAL_MODE_FIELD_NUMBER: _ClassVar[int]
    ENCODER_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    LABEL_COUNT_FIELD_NUMBER: _ClassVar[int]
    CONFIG_VERSION_FIELD_NUMBER: _ClassVar[int]
    TUNED_ENCODER_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    USES_HEAD_FIELD_NUMBER: _ClassVar[int]
    index_version: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    retrieval_mode: RetrievalMode
    encoder_fingerprint: str
    rows: int
    label_count: int
    config_version: str
    tuned_encoder_fingerprint: str
    limits: RequestLimits
    uses_head: bool
    def __init__(self, index_version: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ..., retrieval_mode: _Optional[_Union[RetrievalMode, str]] = ..., encoder_fingerprint: _Optional[str] = ..., rows: _Optional[int] = ..., label_count: _Optional[int] = ..., config_version: _Optional[str] = ..., tuned_encoder_fingerprint: _Optional[str] = ..., limits: _Optional[_Union[RequestLimits, _Mapping]] = ..., uses_head: _Optional[bool] = ...) -> None: ...

class SubmitFeedbackRequest(_message.Message):
    __slots__ = ("text", "request_id", "correct_label", "none_of_these", "source")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CORRECT_LABEL_FIELD_NUMBER: _ClassVar[int]
    NONE_OF_THESE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    text: str
    request_id: str
    correct_label: str
    none_of_these: bool
    source: str
    def __init__(self, text: _Optional[str] = ..., request_id: _Optional[str] = ..., correct_label: _Optional[str] = ..., none_of_these: _Optional[bool] = ..., source: _Optional[str] = ...) -> None: ...

class SubmitFeedbackResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
