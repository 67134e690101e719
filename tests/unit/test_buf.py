"""buf guards the contract: proto/calc.proto lints clean and stays compatible with released/calc.proto,
and a renumbered, retyped or renamed field really fails `buf breaking` (make check runs both)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUF = ROOT / "node_modules" / ".bin" / "buf"
if not BUF.exists() and shutil.which("buf"):  # the native binary on PATH (make test-py313's container)
    BUF = Path(str(shutil.which("buf")))
PROTO = ROOT / "proto" / "calc.proto"


def _buf(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    # make install runs npm ci (scripts/install-tools.sh): a missing buf is a failure, not a skip.
    assert BUF.exists(), "buf is missing: run make install (npm ci installs @bufbuild/buf)"
    return subprocess.run([str(BUF), *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                          check=False)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A copy of the repo's buf setup: buf.yaml, proto/ and released/."""
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    shutil.copytree(ROOT / "proto", tmp_path / "proto")
    shutil.copytree(ROOT / "released", tmp_path / "released")
    return tmp_path


def _edit(workspace: Path, old: str, new: str) -> None:
    path = workspace / "proto" / "calc.proto"
    text = path.read_text()
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new))


def test_the_contract_lints_clean_and_is_compatible_with_the_release() -> None:
    for args in (("lint",), ("breaking", "--against", "released")):
        result = _buf(*args)
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("old", "new", "complaint"), [
    ("string source = 5;", "string source = 9;", 'field "5" with name "source"'),
    ("repeated double operands = 4;", "repeated float operands = 4;", 'from "double" to "float"'),
    ("uint32 attempts = 7;", "uint32 attempt_count = 7;", 'from "attempts" to "attempt_count"'),
    ("FAILURE_REASON_OVERFLOW = 3;", "FAILURE_REASON_OVERFLOW = 30;", 'enum value "3"'),
], ids=["renumbered", "retyped", "renamed", "enum-renumbered"])
def test_buf_breaking_fails_on_an_incompatible_change(workspace: Path, old: str, new: str,
                                                      complaint: str) -> None:
    _edit(workspace, old, new)
    result = _buf("breaking", "--against", "released", cwd=workspace)
    assert result.returncode != 0
    assert complaint in result.stdout, result.stdout + result.stderr


def test_buf_breaking_accepts_a_new_field(workspace: Path) -> None:
    _edit(workspace, "  string source = 5;\n",
          "  string source = 5;\n  // The tenant that asked, when there is one.\n  string tenant = 6;\n")
    result = _buf("breaking", "--against", "released", cwd=workspace)
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_lint_fails_on_an_uncommented_field_and_a_bad_zero_value(workspace: Path) -> None:
    _edit(workspace, "  string source = 5;\n", "  string source = 5;\n  string tenant = 6;\n")
    _edit(workspace, "OPERATION_UNSPECIFIED = 0;", "OPERATION_NONE = 0;")
    result = _buf("lint", cwd=workspace)
    assert result.returncode != 0
    assert 'Field "tenant" should have a non-empty comment' in result.stdout, result.stdout
    assert 'OPERATION_NONE' in result.stdout and "_UNSPECIFIED" in result.stdout, result.stdout
