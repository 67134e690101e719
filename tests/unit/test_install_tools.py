"""scripts/install-tools.sh, which make install runs: a second run changes nothing and succeeds, and a
missing venv is a one-line error."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "install-tools.sh"


def _run(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT)], cwd=ROOT, env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=300, check=False)


def test_a_second_run_keeps_what_is_installed_and_succeeds() -> None:
    buf = ROOT / "node_modules" / "@bufbuild" / "buf" / "package.json"
    before = buf.stat().st_mtime_ns
    result = _run()
    assert result.returncode == 0, result.stderr
    pinned = json.loads((ROOT / "package.json").read_text())["devDependencies"]["@bufbuild/buf"]
    assert f"buf {pinned}, promtool, version 2." in result.stdout
    assert buf.stat().st_mtime_ns == before, "npm ci ran again"


def test_a_missing_venv_is_a_one_line_error(tmp_path: Path) -> None:
    result = _run(VENV=str(tmp_path / "no-venv"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"install-tools.sh: {tmp_path}/no-venv/bin does not exist: run make install"]
