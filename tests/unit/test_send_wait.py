"""send --wait without a broker: which outcome answers, how it reads, how it prints."""

from __future__ import annotations

import pytest

from calculator import Operation
from gen import calc_pb2
from messaging import codec
from producer import __main__ as entry
from producer.answer import Answer, AnswerLost, Answers, read


def _completed(request_id: str, correlation_id: str, result: float) -> codec.Incoming:
    request = codec.build_request(Operation.ADD, [1.0, 2.0], "t")
    request.event_id = request_id
    message, _ = codec.completed_message(request, result, correlation_id, "c-1", 1)
    return codec.Incoming(message.body, "calc.completed.add", correlation_id=correlation_id)


def _failed(request_id: str, correlation_id: str) -> codec.Incoming:
    message, _ = codec.failed_message(request_id, calc_pb2.OPERATION_DIVIDE,
                                      calc_pb2.FAILURE_REASON_RETRIES_EXHAUSTED, "injected fault", 4,
                                      correlation_id, "c-2")
    return codec.Incoming(message.body, "calc.failed.divide", correlation_id=correlation_id)


def test_outcomes_read_as_answers() -> None:
    done = read(_completed("r-1", "k-1", 3.0))
    assert done is not None and (done.status, done.event_id, done.correlation_id, done.result) == (
        "completed", "r-1", "k-1", 3.0)
    failed = read(_failed("r-2", "k-2"))
    assert failed is not None and (failed.status, failed.reason, failed.detail, failed.attempts) == (
        "failed", "RETRIES_EXHAUSTED", "injected fault", 4)
    assert failed.as_json()["result"] is None and done.as_json()["reason"] is None
    assert read(codec.Incoming(b"\xff\xff", "calc.completed.add")) is None
    assert read(codec.Incoming(b"", "calc.other.add")) is None


async def test_the_first_outcome_of_this_request_and_correlation_ends_the_wait() -> None:
    answers = Answers(None, "add")  # type: ignore[arg-type]  # wait() only reads what arrived
    for other in (_completed("someone-else", "k", 1.0), _completed("r", "another-correlation", 2.0),
                  _failed("r", "k"), _completed("r", "k", 9.0)):
        answer = read(other)
        assert answer is not None
        answers._arrived.put_nowait(answer)
    answer = await answers.wait("r", "k", timeout=1)
    assert (answer.status, answer.reason) == ("failed", "RETRIES_EXHAUSTED")  # a later one is not it


async def test_no_outcome_times_out_and_a_lost_connection_says_so() -> None:
    answers = Answers(None, "add")  # type: ignore[arg-type]
    with pytest.raises(TimeoutError):
        await answers.wait("r", "k", timeout=0.1)
    answers._on_close()
    with pytest.raises(AnswerLost, match="connection was lost"):
        await answers.wait("r", "k", timeout=1)


def test_results_print_as_people_write_numbers() -> None:
    assert [entry._number(v) for v in (5.0, 0.5, -2.0, 1e300, 1024.0)] == ["5", "0.5", "-2", "1e+300", "1024"]


@pytest.mark.parametrize("bad", ["0", "-3", "nan", "inf", "soon"])
def test_a_bad_timeout_exits_2(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        entry.parse(["send", "add", "1", "2", "--wait", "--timeout", bad])
    assert exited.value.code == 2
    assert capsys.readouterr().err.startswith("calc-producer send: error: argument --timeout: ")


def test_answer_json_is_one_flat_object() -> None:
    shown = Answer("completed", "r", "k", "o", result=3.0, processed_by="c").as_json()
    assert shown == {"status": "completed", "event_id": "r", "correlation_id": "k", "outcome_event_id": "o",
                     "result": 3.0, "reason": None, "detail": None, "attempts": None, "processed_by": "c"}
