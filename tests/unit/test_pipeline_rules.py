"""The consumer's rules (tests/support/pipeline_rules.py) on the fake broker: no RabbitMQ, seconds."""

from __future__ import annotations

import pytest

from tests.support.pipeline_rules import SCENARIOS, FakeHarness, Scenario, settings_for


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
async def test_rule(scenario: Scenario) -> None:
    await scenario.run(FakeHarness(settings_for("amqp://guest:guest@localhost/", **scenario.settings)))
