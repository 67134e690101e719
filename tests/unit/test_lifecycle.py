"""messaging.lifecycle: a metrics port that cannot be served is a clear configuration error (no broker)."""

from __future__ import annotations

import socket
from dataclasses import replace

import pytest

from messaging import lifecycle
from messaging.errors import ConfigurationError
from messaging.settings import Settings


def test_a_taken_metrics_port_is_a_configuration_error_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))  # where start_http_server binds
        taken.listen()
        port = taken.getsockname()[1]
        settings = replace(Settings.from_env({"RABBITMQ_URL": "amqp://guest:guest@127.0.0.1:5672/"}),
                           metrics_port=port)
        with pytest.raises(ConfigurationError, match=rf"port {port} \(CALC_METRICS_PORT\): Address already"):
            lifecycle.serve_metrics(settings)

        async def service() -> int:
            lifecycle.serve_metrics(settings)
            return lifecycle.EXIT_OK

        assert lifecycle.run(service) == lifecycle.EXIT_USAGE
    assert capsys.readouterr().err == (f"error: cannot serve /metrics on port {port} (CALC_METRICS_PORT): "
                                       "Address already in use\n")
