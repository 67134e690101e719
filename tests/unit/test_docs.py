"""The docs stay true: links resolve, generated tables match their JSON, the contract page names
every name the code uses, the metrics table lists every metric, and no lab notebook creeps back."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from gen import calc_pb2
from messaging import codec, topology
from messaging.settings import Settings
from scripts import doc_tables

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "README.md",
        ROOT / "k8s" / "README.md"]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)



def _prose(path: Path) -> str:
    return FENCE.sub("", path.read_text())


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    return {_slug(h) for h in re.findall(r"^#+ (.+)$", _prose(path), flags=re.M)}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_at_an_existing_file_and_heading(doc: Path) -> None:
    broken = []
    for target in LINK.findall(_prose(doc)):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not this repository's
        path, _, anchor = target.partition("#")
        resolved = (doc.parent / path).resolve() if path else doc
        if not resolved.exists():
            broken.append(target)
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{doc.relative_to(ROOT)}: {broken}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_lab_notebook(doc: Path) -> None:
    """No issue numbers, commit hashes or links out of the repository: a clone has none of them."""
    text = doc.read_text()
    assert not re.search(r"\bissues? \d+|\bcommit [0-9a-f]{7,40}\b|\.\./shared", text, re.I)


def test_readme_is_a_user_guide_not_a_manual() -> None:
    assert len((ROOT / "README.md").read_bytes()) < 12_000


@pytest.mark.parametrize("name", list(doc_tables.TABLES))
def test_generated_tables_equal_their_json(name: str) -> None:
    table = doc_tables.TABLES[name]
    text = table.doc.read_text()
    assert doc_tables.rendered(table, text, doc_tables.load(table.data)) == text, (
        f"run: python scripts/doc_tables.py (the {name} table differs from {table.data.name})")


def _copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> doc_tables.Table:
    """The reliability table with its doc and JSON copied to `tmp_path`."""
    table = doc_tables.TABLES["reliability"]
    doc, data = tmp_path / "reliability.md", tmp_path / "reliability.json"
    shutil.copy(table.doc, doc)
    shutil.copy(table.data, data)
    copy = doc_tables.Table(table.name, data, doc, table.render, table.incomplete)
    monkeypatch.setattr(doc_tables, "TABLES", {"reliability": copy})
    monkeypatch.setattr(doc_tables, "ROOT", tmp_path)
    return copy


def test_a_complete_run_is_published_and_rendered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    table = _copy(tmp_path, monkeypatch)
    run = doc_tables.load(table.data) | {"generated_at": "2030-01-02T03:04:05+00:00", "note": ""}
    run["rows"] = [{**r, "duplicates": 7} for r in run["rows"]]
    doc_tables.publish("reliability", run)
    assert doc_tables.load(table.data) == run
    text = table.doc.read_text()
    assert "recorded 2030-01-02" in text
    assert text.count(" | 0 | 7 | ") == len(run["rows"])


def test_a_journal_column_appears_only_when_a_row_has_one() -> None:
    data = doc_tables.load(doc_tables.TABLES["reliability"].data)
    # without the column's field (a published run may carry it: the chaos tier runs the journal)
    data["rows"] = [{k: v for k, v in r.items() if k != "journal_rows"} for r in data["rows"]]
    assert "rows in the journal" not in doc_tables.reliability(data)
    data["rows"] = [{**data["rows"][0], "journal_rows": 30_000}, *data["rows"][1:]]
    lines = doc_tables.reliability(data).splitlines()
    header = next(line for line in lines if line.startswith("| scenario"))
    assert header.split(" | ")[5] == "rows in the journal"
    assert " | 30,000 | " in lines[lines.index(header) + 2]
    assert all(line.count("|") == header.count("|") for line in lines if line.startswith("| "))


def test_a_partial_run_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    table = _copy(tmp_path, monkeypatch)
    before = table.doc.read_text(), table.data.read_text()
    run = doc_tables.load(table.data)
    run["rows"] = run["rows"][:1]
    with pytest.raises(doc_tables.DocError, match="scenario"):
        doc_tables.publish("reliability", run)
    assert (table.doc.read_text(), table.data.read_text()) == before


def test_a_smoke_benchmark_is_not_published() -> None:
    table = doc_tables.TABLES["bench"]
    smoke = doc_tables.load(table.data) | {"mode": "smoke"}
    assert table.incomplete(smoke, doc_tables.load(table.data)) == "a smoke run, not a full one"


def test_the_cli_exits_2_on_unreadable_json_and_0_when_up_to_date(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "run.json"
    bad.write_text("{not json")
    assert doc_tables.main(["--publish", "bench", str(bad)]) == 2
    assert capsys.readouterr().err.startswith("error: cannot read")
    assert doc_tables.main(["--check"]) == 0


def test_a_doc_without_its_markers_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    table = _copy(tmp_path, monkeypatch)
    table.doc.write_text("# Reliability\n")
    with pytest.raises(doc_tables.DocError, match="no markers for the reliability table"):
        doc_tables.render_all()


def test_the_contract_page_names_everything_the_code_uses() -> None:
    contract = (ROOT / "docs" / "contract.md").read_text()
    names = [*calc_pb2.Operation.keys(), *calc_pb2.FailureReason.keys(), codec.CONTENT_TYPE,
             codec.APP_PRODUCER, codec.APP_CONSUMER, codec.APP_INSPECTOR, "attempt",
             f"x-delivery-limit` {topology.DLQ_DELIVERY_LIMIT}"]
    table = topology.build(Settings())
    names += [q.name if not q.name.startswith(topology.RETRY_PREFIX) else topology.RETRY_PREFIX + "*"
              for q in table.queues]
    names += [e.name for e in table.exchanges if not e.name.startswith(topology.RETRY_PREFIX)]
    for message in (calc_pb2.CalculationRequested, calc_pb2.CalculationCompleted, calc_pb2.CalculationFailed):
        section = contract.split(f"### {message.DESCRIPTOR.name}\n", 1)[1].split("\n#", 1)[0]
        fields = re.findall(r"^\| (\d+) \| `(\w+)` \|", section, flags=re.M)
        assert fields == [(str(f.number), f.name) for f in message.DESCRIPTOR.fields], message.DESCRIPTOR.name
    missing = [name for name in names if f"`{name}" not in contract]
    assert not missing


def _metrics_in_code() -> set[str]:
    """Every metric the services define, by its exposed name (a counter's ends in _total)."""
    found = set()
    for package in ROOT.iterdir():
        if not (package / "__init__.py").exists() or package.name in ("tests", "bench", "gen", "scripts"):
            continue
        for source in package.rglob("*.py"):
            for kind, name in re.findall(r"\b(Counter|Gauge|Histogram|Summary|Info)(?:MetricFamily)?\(\s*"
                                         r"\"(calc_\w+)\"", source.read_text()):
                found.add(name if kind != "Counter" or name.endswith("_total") else name + "_total")
    return found


def test_every_metric_is_in_the_docs_and_every_documented_metric_exists() -> None:
    documented = {name for doc in (ROOT / "docs").glob("*.md")
                  for name in re.findall(r"^\| `(calc_\w+)` \|", doc.read_text(), flags=re.M)}
    code = _metrics_in_code()
    assert "calc_consumer_messages_total" in code  # the search finds them at all
    assert code == documented


def test_the_json_the_docs_render_is_valid_json() -> None:
    for table in doc_tables.TABLES.values():
        json.loads(table.data.read_text())
