"""bench.buckets: py-spy samples sorted into the README's "where the time goes" rows (no broker)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import buckets

ROOT = ("_run_module_as_main (<frozen runpy>:198);main (bench/variants/__main__.py:47);"
        "BaseEventLoop._run_once (/x/lib/python3.11/asyncio/base_events.py:1922);"
        "Handle._run (/x/lib/python3.11/asyncio/events.py:80)")
HANDLER = ("ConsumerService._on_message (consumer/service.py:296);"
           "ConsumerService._handle (consumer/service.py:331)")
SITE = "/x/lib/python3.11/site-packages"


@pytest.mark.parametrize(("leaf", "expected"), [
    (f"Channel.basic_publish ({SITE}/aiormq/channel.py:964)", "machinery"),
    (f"Channel.basic_publish ({SITE}/aiormq/channel.py:964);marshal ({SITE}/pamqp/frame.py:38)", "codec"),
    (f"Channel.basic_publish ({SITE}/aiormq/channel.py:964);"
     "_SelectorSocketTransport.write (/x/lib/python3.11/asyncio/selector_events.py:1060)", "socket"),
    (f"MutexValue.inc ({SITE}/prometheus_client/values.py:27)", "metrics"),
    ("Logger.info (/x/lib/python3.11/logging/__init__.py:1489)", "log"),
    ("evaluate (consumer/handler.py:60);compute (calculator/__init__.py:80)", "checks"),
    ("completed_message (messaging/codec.py:221);uuid4 (/x/lib/python3.11/uuid.py:723)", "protobuf"),
    ("ConsumerService._settle (consumer/service.py:420);_Acks._add (consumer/service.py:97)", "settle"),
    ("ConsumerService._complete (consumer/service.py:349)", "service"),
])
def test_a_sample_goes_to_the_bucket_of_its_innermost_known_frame(leaf: str, expected: str) -> None:
    line = f"{ROOT};{HANDLER};{leaf}"
    frames = [(f.rpartition(" (")[0], buckets._short(f.rpartition(" (")[2].rstrip(")").rsplit(":", 1)[0]))
              for f in line.split(";")]
    assert buckets.bucket(frames) == expected


def test_start_up_is_kept_apart_and_counts_add_up(tmp_path: Path) -> None:
    raw = tmp_path / "consumer-ours-0.txt"
    raw.write_text(
        f"{ROOT};connect (messaging/connection.py:60);"
        f"Connection.connect ({SITE}/aiormq/connection.py:500) 7\n"
        f"{ROOT};{HANDLER};Logger.info (/x/lib/python3.11/logging/__init__.py:1489) 5\n"
        f"{ROOT};{HANDLER} 3\n")
    counts = buckets.read(raw)
    assert counts == {"other": 7, "log": 5, "service": 3}
