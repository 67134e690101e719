import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Operation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OPERATION_UNSPECIFIED: _ClassVar[Operation]
    OPERATION_ADD: _ClassVar[Operation]
    OPERATION_SUBTRACT: _ClassVar[Operation]
    OPERATION_MULTIPLY: _ClassVar[Operation]
    OPERATION_DIVIDE: _ClassVar[Operation]
    OPERATION_MODULO: _ClassVar[Operation]
    OPERATION_POWER: _ClassVar[Operation]
    OPERATION_SQRT: _ClassVar[Operation]
    OPERATION_FACTORIAL: _ClassVar[Operation]

class FailureReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FAILURE_REASON_UNSPECIFIED: _ClassVar[FailureReason]
    FAILURE_REASON_DIVISION_BY_ZERO: _ClassVar[FailureReason]
    FAILURE_REASON_DOMAIN_ERROR: _ClassVar[FailureReason]
    FAILURE_REASON_OVERFLOW: _ClassVar[FailureReason]
    FAILURE_REASON_INVALID_ARGUMENTS: _ClassVar[FailureReason]
    FAILURE_REASON_UNKNOWN_OPERATION: _ClassVar[FailureReason]
    FAILURE_REASON_MALFORMED_MESSAGE: _ClassVar[FailureReason]
    FAILURE_REASON_RETRIES_EXHAUSTED: _ClassVar[FailureReason]
OPERATION_UNSPECIFIED: Operation
OPERATION_ADD: Operation
OPERATION_SUBTRACT: Operation
OPERATION_MULTIPLY: Operation
OPERATION_DIVIDE: Operation
OPERATION_MODULO: Operation
OPERATION_POWER: Operation
OPERATION_SQRT: Operation
OPERATION_FACTORIAL: Operation
FAILURE_REASON_UNSPECIFIED: FailureReason
FAILURE_REASON_DIVISION_BY_ZERO: FailureReason
FAILURE_REASON_DOMAIN_ERROR: FailureReason
FAILURE_REASON_OVERFLOW: FailureReason
FAILURE_REASON_INVALID_ARGUMENTS: FailureReason
FAILURE_REASON_UNKNOWN_OPERATION: FailureReason
FAILURE_REASON_MALFORMED_MESSAGE: FailureReason
FAILURE_REASON_RETRIES_EXHAUSTED: FailureReason

class CalculationRequested(_message.Message):
    __slots__ = ("event_id", "occurred_at", "operation", "operands", "source")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    OPERANDS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    occurred_at: _timestamp_pb2.Timestamp
    operation: Operation
    operands: _containers.RepeatedScalarFieldContainer[float]
    source: str
    def __init__(self, event_id: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., operation: _Optional[_Union[Operation, str]] = ..., operands: _Optional[_Iterable[float]] = ..., source: _Optional[str] = ...) -> None: ...

class CalculationCompleted(_message.Message):
    __slots__ = ("event_id", "request_event_id", "occurred_at", "operation", "operands", "result", "processed_by")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    OPERANDS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    PROCESSED_BY_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    request_event_id: str
    occurred_at: _timestamp_pb2.Timestamp
    operation: Operation
    operands: _containers.RepeatedScalarFieldContainer[float]
    result: float
    processed_by: str
    def __init__(self, event_id: _Optional[str] = ..., request_event_id: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., operation: _Optional[_Union[Operation, str]] = ..., operands: _Optional[_Iterable[float]] = ..., result: _Optional[float] = ..., processed_by: _Optional[str] = ...) -> None: ...

class CalculationFailed(_message.Message):
    __slots__ = ("event_id", "request_event_id", "occurred_at", "operation", "reason", "detail", "attempts", "processed_by")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    PROCESSED_BY_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    request_event_id: str
    occurred_at: _timestamp_pb2.Timestamp
    operation: Operation
    reason: FailureReason
    detail: str
    attempts: int
    processed_by: str
    def __init__(self, event_id: _Optional[str] = ..., request_event_id: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., operation: _Optional[_Union[Operation, str]] = ..., reason: _Optional[_Union[FailureReason, str]] = ..., detail: _Optional[str] = ..., attempts: _Optional[int] = ..., processed_by: _Optional[str] = ...) -> None: ...
