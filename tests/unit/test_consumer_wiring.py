"""The consumer's seams: the test crash hook `__main__` installs, the default fault, `inject_fault`."""

from __future__ import annotations

import random

import pytest

from calculator import Operation
from consumer import __main__ as entry
from consumer.pipeline import no_fault, random_fault
from consumer.service import ConsumerService
from messaging import codec, topology
from messaging.settings import Settings
from messaging.verdict import Outcome
from tests.support.fake_transport import FakeBroker, FakePublisher, FakeTransport

SETTINGS = Settings.from_env({"RABBITMQ_URL": "amqp://guest:guest@localhost/"})


def _outcome(source: str) -> Outcome:
    return Outcome(codec.build_request(Operation.ADD, (1.0, 2.0), source, event_id="e-1"), "e-1", "add", 3.0)


def test_the_crash_hook_exits_on_its_source_only(monkeypatch: pytest.MonkeyPatch) -> None:
    exits: list[int] = []
    monkeypatch.setattr("consumer.__main__.os._exit", exits.append)
    hook = entry.crash_hook("poison")
    hook(_outcome("someone"))
    hook(Outcome(None, "", "add", reason=1, detail="undecodable"))
    assert exits == []
    hook(_outcome("poison"))
    assert exits == [entry.CRASH_STATUS]


def test_the_default_fault_follows_the_rate() -> None:
    assert random_fault(0.0) is no_fault, "no fault rate: nothing drawn per message"
    always, sometimes = random_fault(1.0), random_fault(0.5, random.Random(7))
    assert all(always(_outcome("x"), 1) for _ in range(100))
    assert 30 < sum(sometimes(_outcome("x"), 1) for _ in range(100)) < 70


async def test_inject_fault_can_be_set_before_and_while_running() -> None:
    broker = FakeBroker(SETTINGS)
    queues = tuple(topology.work_queue(kind) for kind in SETTINGS.queues)
    service = ConsumerService(SETTINGS, None, publisher=FakePublisher(broker),
                              transport=FakeTransport(broker, queues, SETTINGS.prefetch))

    def before(outcome: Outcome, attempt: int) -> bool:
        return False

    def during(outcome: Outcome, attempt: int) -> bool:
        return True

    service.inject_fault = before
    await service.start()
    assert service.inject_fault is before
    service.inject_fault = during
    assert service.pipeline.fault is during
    await service.stop(timeout=1)
    assert service.failure is None and service.in_flight == 0 and service.settled == 0
