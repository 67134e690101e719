"""The journal's ordering without a broker or a database: commit, then one multiple ack; nothing
acked while the database fails; a refused row and an undecodable outcome go to the journal DLQ first."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pytest
from pamqp.commands import Basic

from gen import calc_pb2
from journal import deadletter
from journal import service as service_module
from journal.record import REFUSED, UNDECODABLE, Outcome
from journal.service import JournalService
from journal.store import DatabaseRefused, DatabaseUnavailable, Recorded, RowRefused
from messaging import codec
from messaging.backoff import Backoff
from messaging.errors import PublishFailed
from messaging.settings import Settings


class Channel:
    def __init__(self, log: list[Any]) -> None:
        self.is_closed = False
        self.log = log

    async def basic_ack(self, tag: int, multiple: bool = False) -> None:
        self.log.append(("ack", tag, multiple))


class Store:
    """Records batches into `log`; fails as `failures` says, in order, first."""

    def __init__(self, log: list[Any], failures: Sequence[Exception] = ()) -> None:
        self.log = log
        self.failures = list(failures)

    async def ping(self) -> None:
        pass

    async def record(self, outcomes: Sequence[Outcome]) -> Recorded:
        if self.failures:
            raise self.failures.pop(0)
        if len(outcomes) > 1 and any(o.request_event_id == "poison" for o in outcomes):
            raise RowRefused("DataError: poison")
        if [o.request_event_id for o in outcomes] == ["poison"]:
            raise RowRefused("DataError: poison")
        self.log.append(("commit", [o.request_event_id for o in outcomes]))
        return Recorded(len(outcomes), 0, 0)


def _message(channel: Channel, tag: int, request_id: str, body: bytes | None = None) -> Any:
    event = calc_pb2.CalculationCompleted(event_id=f"e-{tag}", request_event_id=request_id, result=1.0)
    properties = Basic.Properties(message_type=codec.TYPE_COMPLETED, content_type=codec.CONTENT_TYPE,
                                  message_id=f"e-{tag}", headers={})
    return SimpleNamespace(channel=channel, delivery_tag=tag, body=event.SerializeToString() if body is None
                           else body, header=SimpleNamespace(properties=properties),
                           delivery=SimpleNamespace(routing_key="calc.completed.add", redelivered=False))


@pytest.fixture
def log(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    events: list[Any] = []
    failures: list[Exception] = []

    async def publish(channel: object, exchange: str, message: codec.Outgoing, key: str,
                      timeout: float) -> None:
        if failures:
            raise failures.pop(0)
        assert message.properties.headers is not None
        events.append(("dead-letter", message.properties.headers["reason"]))

    monkeypatch.setattr(deadletter, "publish", publish)
    monkeypatch.setattr(service_module, "DATABASE", Backoff(0.01, 0.01))
    monkeypatch.setattr(service_module, "LINGER_S", 0.05)
    events.append(failures)  # the test may make the next publishes fail
    return events


async def _run(store: Store, messages: list[Any], batch: int = 10, wait: float = 2.0) -> JournalService:
    journal = JournalService(Settings(journal_batch=batch), None, store)  # type: ignore[arg-type]
    journal._publish = SimpleNamespace(is_closed=True)  # type: ignore[assignment]
    journal._writer = asyncio.create_task(journal._write_loop())
    for message in messages:
        await journal._on_message(message)
    for _ in range(int(wait / 0.01)):
        if journal.acked == len(messages):
            break
        await asyncio.sleep(0.01)
    return journal


async def test_a_batch_is_committed_then_acked_once_with_multiple(log: list[Any]) -> None:
    channel = Channel(log)
    journal = await _run(Store(log), [_message(channel, t, f"r{t}") for t in range(1, 6)])
    assert log[1:] == [("commit", ["r1", "r2", "r3", "r4", "r5"]), ("ack", 5, True)]
    assert journal.acked == 5 and journal.held == 0
    await journal.stop(timeout=1)


@pytest.mark.parametrize("failure", [DatabaseUnavailable("down"),
                                     DatabaseRefused("the database is read-only")])
async def test_nothing_is_acked_while_the_database_fails(log: list[Any], failure: Exception) -> None:
    channel = Channel(log)
    store = Store(log, [failure, failure, failure])
    journal = await _run(store, [_message(channel, t, f"r{t}") for t in (1, 2)])
    assert log[1:] == [("commit", ["r1", "r2"]), ("ack", 2, True)]  # only after the third retry
    assert journal.health.database and str(failure) == journal.health.error
    await journal.stop(timeout=1)


async def test_a_refused_row_and_an_undecodable_outcome_go_to_the_dlq_before_the_ack(log: list[Any]) -> None:
    channel = Channel(log)
    log[0].append(PublishFailed("nacked"))  # the first dead-letter publish is not confirmed
    messages = [_message(channel, 1, "r1"), _message(channel, 2, "poison"),
                _message(channel, 3, "r3", body=b"\xff\xff"), _message(channel, 4, "r4")]
    journal = await _run(Store(log), messages)
    steps = log[1:]
    assert steps[-1] == ("ack", 4, True) and journal.acked == 4
    assert steps.count(("dead-letter", UNDECODABLE)) == 1 and steps.count(("dead-letter", REFUSED)) == 1
    commits = [s for s in steps if s[0] == "commit"]
    assert sorted(r for _, rows in commits for r in rows) == ["r1", "r4"]
    await journal.stop(timeout=1)


async def test_stopping_with_the_database_away_acks_nothing(log: list[Any]) -> None:
    channel = Channel(log)
    down = Store(log, [DatabaseUnavailable("down")] * 100_000)
    journal = await _run(down, [_message(channel, 1, "r1")], wait=0.3)
    await journal.stop(timeout=5)
    assert not [s for s in log[1:] if s[0] == "ack"] and journal.acked == 0


async def test_an_idle_journal_notices_the_database_leave_and_come_back_by_ping() -> None:
    from journal.health import DatabaseProbe, Health

    answers: list[Exception | None] = [DatabaseUnavailable("gone"), None]

    async def ping() -> None:
        answer = answers.pop(0) if answers else None
        if answer is not None:
            raise answer

    health = Health(database=True)
    probe = DatabaseProbe(health, ping, (DatabaseUnavailable,), every=0.01)
    probe.last_write = 0.0
    task = asyncio.create_task(probe.run())
    for _ in range(100):
        await asyncio.sleep(0.01)
        if not answers:
            break
    await asyncio.sleep(0.05)
    assert health.database and health.error == "gone"  # down at the first ping, up at the second
    health.database = False  # now a write is refused: a ping that answers does not clear it
    await asyncio.sleep(0.05)
    task.cancel()
    assert not health.database
