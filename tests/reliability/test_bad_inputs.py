"""A corpus of bad inputs, each through the CLI: a clear message naming file, line/row and field,
the documented exit code (negmine.errors), and an existing run directory left exactly as it was.

Every case starts from a small valid dataset (BEIR, MS MARCO or Parquet), breaks one thing, and runs
``negmine ingest`` (or the named command) against a copy of a run directory that already holds a
complete ingest. A few cases must be *accepted* (BOM, CRLF, extra fields, a 50 MB line).
"""

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import GOOD_CORPUS, GOOD_QRELS, GOOD_QUERIES, invoke, tree_hashes, write_beir

BAD_INPUT, FAILURE = 2, 1


def good_beir(d: Path) -> Path:
    return write_beir(d, GOOD_CORPUS, GOOD_QUERIES, GOOD_QRELS)


def good_msmarco(d: Path) -> Path:
    d.mkdir(parents=True)
    (d / "collection.tsv").write_text("d1\tCats purr.\nd2\tDogs bark.\n")
    (d / "queries.train.tsv").write_text("q1\twhat purrs\nq2\twhat barks\n")
    (d / "qrels.train.tsv").write_text("q1 0 d1 1\nq2 0 d2 1\n")
    return d


def good_parquet(d: Path) -> Path:
    d.mkdir(parents=True)
    pq.write_table(pa.table({"doc_id": ["d1", "d2"], "title": ["Cats", None], "text": ["Cats purr.", "Dogs bark."]}), d / "corpus.parquet")
    pq.write_table(pa.table({"query_id": ["q1", "q2"], "text": ["what purrs", "what barks"]}), d / "queries.parquet")
    pq.write_table(pa.table({"query_id": ["q1", "q2"], "doc_id": ["d1", "d2"], "relevance": pa.array([1, 1], pa.int32())}), d / "qrels.parquet")
    return d


LAYOUTS = {"beir": good_beir, "msmarco": good_msmarco, "parquet": good_parquet}


@dataclass
class Case:
    name: str
    files: dict = field(default_factory=dict)  # path in the dataset -> str | bytes | pa.Table | None (delete)
    expect: tuple = ()  # substrings of the output; {data} and {run} are filled in
    code: int = BAD_INPUT
    layout: str = "beir"
    argv: tuple = ("ingest", "--data", "{data}", "--out", "{run}")
    prepare: Callable | None = None  # prepare(data, run) for cases about the run directory itself


def jsonl(*records) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


D1 = {"_id": "d1", "title": "Cats", "text": "Cats purr."}
D2 = {"_id": "d2", "text": "Dogs bark."}
Q1, Q2 = {"_id": "q1", "text": "what purrs"}, {"_id": "q2", "text": "what barks"}
C, Q, R = "corpus.jsonl", "queries.jsonl", "qrels/train.tsv"


def qrels(*rows) -> str:
    return "query-id\tcorpus-id\tscore\n" + "".join("\t".join(r) + "\n" for r in rows)


def old_schema_run(data, run):
    manifest = run / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "schema_version": 0}))


def garbage_manifest(data, run):
    (run / "manifest.json").write_text('{"schema_version": 1, "stages": ')


def stages_not_a_dict(data, run):
    (run / "manifest.json").write_text('{"schema_version": 1, "stages": []}')


CASES = [
    # --- BEIR JSON lines ---
    Case("truncated-json", {C: jsonl(D1, '{"_id": "d2", "text": "Dogs')}, ("{data}/corpus.jsonl, line 2: invalid JSON (Unterminated string",)),
    Case("invalid-json-trailing-comma", {Q: jsonl(Q1, '{"_id": "q2", "text": "x",}')}, ("{data}/queries.jsonl, line 2: invalid JSON",)),
    Case("json-array-not-object", {C: jsonl(D1, '["d2", "Dogs bark."]')}, ("{data}/corpus.jsonl, line 2: expected a JSON object, found list",)),
    Case("missing-id", {C: jsonl(D1, {"text": "no id"})}, ("{data}/corpus.jsonl, line 2, field '_id': missing id",)),
    Case("missing-text", {C: jsonl(D1, {"_id": "d2", "title": "t"})}, ("{data}/corpus.jsonl, line 2, field 'text': missing field",)),
    Case("text-wrong-type", {C: jsonl(D1, {"_id": "d2", "text": 42})}, ("{data}/corpus.jsonl, line 2, field 'text': expected a string, found int",)),
    Case("title-wrong-type", {C: jsonl(D1, {"_id": "d2", "title": ["a"], "text": "x"})}, ("{data}/corpus.jsonl, line 2, field 'title': expected a string, found list",)),
    Case("id-wrong-type", {Q: jsonl(Q1, {"_id": True, "text": "x"})}, ("{data}/queries.jsonl, line 2, field '_id': id must be a string or integer, found bool",)),
    Case("duplicate-doc-id", {C: jsonl(D1, D2, {"_id": "d1", "text": "again"})}, ("{data}/corpus.jsonl, line 3, field '_id': duplicate id 'd1' (first seen at line 1)",)),
    Case("duplicate-query-id", {Q: jsonl(Q1, Q2, Q1)}, ("{data}/queries.jsonl, line 3, field '_id': duplicate id 'q1' (first seen at line 1)",)),
    Case("empty-text", {C: jsonl(D1, {"_id": "d2", "text": ""})}, ("{data}/corpus.jsonl, line 2, field 'text': empty text for id 'd2'",)),
    Case("whitespace-only-text", {Q: jsonl(Q1, {"_id": "q2", "text": " \t\u3000 "})}, ("{data}/queries.jsonl, line 2, field 'text': empty text for id 'q2'",)),
    Case("empty-id", {C: jsonl(D1, {"_id": " ", "text": "x"})}, ("{data}/corpus.jsonl, line 2, field '_id': empty id",)),
    Case("non-utf8-bytes", {C: jsonl(D1).encode() + b'{"_id": "d2", "text": "caf\xe9"}\n'}, ("{data}/corpus.jsonl, line 2: not valid UTF-8 (invalid continuation byte at byte 26)",)),
    Case("latin1-file", {Q: '{"_id": "q1", "text": "né"}\n'.encode("latin-1")}, ("{data}/queries.jsonl, line 1: not valid UTF-8",)),
    Case("unpaired-surrogate-escape", {C: jsonl(D1, '{"_id": "d2", "text": "bad \\ud800 char"}')}, ("{data}/corpus.jsonl, line 2, field 'text': not valid Unicode (surrogates not allowed at character 4)",)),
    Case("json-nested-too-deep", {C: jsonl(D1, "[" * 200_000 + "]" * 200_000)}, ("{data}/corpus.jsonl, line 2: invalid JSON",)),
    Case("json-huge-integer-id", {C: jsonl(D1, '{"_id": ' + "9" * 5000 + ', "text": "x"}')}, ("{data}/corpus.jsonl, line 2: invalid JSON (Exceeds the limit",)),
    Case("nul-bytes-line", {C: jsonl(D1).encode() + b"\x00" * 1000 + b"\n"}, ("{data}/corpus.jsonl, line 2: invalid JSON",)),
    Case("empty-corpus-file", {C: ""}, ("{data}/corpus.jsonl: corpus is empty",)),
    Case("blank-lines-only-corpus", {C: "\n  \n\r\n\t\n"}, ("{data}/corpus.jsonl: corpus is empty",)),
    Case("empty-qrels-file", {R: ""}, ("{data}/qrels/train.tsv: no judgements in split 'train'",)),
    Case("missing-queries-file", {Q: None}, ("{data}/queries.jsonl: file does not exist (needed by the beir layout, split 'train')",)),
    # --- qrels TSV ---
    Case("qrels-unknown-query", {R: qrels(("q1", "d1", "1"), ("q9", "d2", "1"))}, ("{data}/qrels/train.tsv, line 3, field 'query-id': unknown query 'q9' (not in queries.jsonl)",)),
    Case("qrels-unknown-document", {R: qrels(("q1", "d1", "1"), ("q2", "d9", "1"))}, ("{data}/qrels/train.tsv, line 3, field 'corpus-id': unknown document 'd9' (not in corpus.jsonl)",)),
    Case("qrels-relevance-not-integer", {R: qrels(("q1", "d1", "high"))}, ("{data}/qrels/train.tsv, line 2, field 'relevance': relevance must be an integer, found 'high'",)),
    Case("qrels-relevance-underscore", {R: qrels(("q1", "d1", "1_0"))}, ("{data}/qrels/train.tsv, line 2, field 'relevance': relevance must be an integer, found '1_0'",)),
    Case("qrels-relevance-overflows-int32", {R: qrels(("q1", "d1", "99999999999"))}, ("{data}/qrels/train.tsv, line 2, field 'relevance': relevance 99999999999 does not fit int32",)),
    Case("qrels-wrong-column-count", {R: qrels(("q1", "d1"))}, ("{data}/qrels/train.tsv, line 2: expected 3 tab-separated columns, found 2",)),
    Case("qrels-conflicting-judgement", {R: qrels(("q1", "d1", "1"), ("q1", "d1", "2"))}, ("{data}/qrels/train.tsv, line 3: conflicting judgements for ('q1', 'd1'): relevance 2 at line 3, relevance 1 at line 2",)),
    Case("qrels-space-separated", {R: "query-id corpus-id score\nq1 d1 1\n"}, ("{data}/qrels/train.tsv, line 1: expected 3 tab-separated columns, found 1",)),
    # --- MS MARCO ---
    Case("msmarco-tab-in-text", {"collection.tsv": "d1\tCats\tpurr.\n"}, ("{data}/collection.tsv, line 1: expected 2 tab-separated columns, found 3",), layout="msmarco"),
    Case("msmarco-duplicate-pid", {"collection.tsv": "d1\ta\nd2\tb\nd2\tc\n"}, ("{data}/collection.tsv, line 3, field 'pid': duplicate id 'd2' (first seen at line 2)",), layout="msmarco"),
    Case("msmarco-qrels-three-columns", {"qrels.train.tsv": "q1 d1 1\n"}, ("{data}/qrels.train.tsv, line 1: expected 4 columns (qid iter pid relevance), found 3",), layout="msmarco"),
    Case("msmarco-unknown-query", {"qrels.train.tsv": "q1 0 d1 1\nq7 0 d1 1\n"}, ("{data}/qrels.train.tsv, line 2, field 'query-id': unknown query 'q7' (not in queries.train.tsv)",), layout="msmarco"),
    # --- Parquet ---
    Case("parquet-missing-column", {"corpus.parquet": pa.table({"doc_id": ["d1"], "body": ["x"]})}, ("{data}/corpus.parquet, field 'title': missing column",), layout="parquet"),
    Case("parquet-wrong-type", {"qrels.parquet": pa.table({"query_id": ["q1"], "doc_id": ["d1"], "relevance": ["high"]})}, ("{data}/qrels.parquet, field 'relevance': expected type int32, found string",), layout="parquet"),
    Case("parquet-null-text", {"queries.parquet": pa.table({"query_id": ["q1", "q2"], "text": ["a", None]})}, ("{data}/queries.parquet, field 'text': null value in non-nullable column (row 1)",), layout="parquet"),
    Case("parquet-not-parquet", {"corpus.parquet": b"PAR1 but not really"}, ("{data}/corpus.parquet: not a readable Parquet file",), layout="parquet"),
    Case("parquet-truncated", {"corpus.parquet": "truncate"}, ("{data}/corpus.parquet: not a readable Parquet file",), layout="parquet"),
    Case("parquet-duplicate-id", {"corpus.parquet": pa.table({"doc_id": ["d1", "d2", "d1"], "title": [None] * 3, "text": ["a", "b", "c"]})}, ("{data}/corpus.parquet, field 'doc_id': row 2: duplicate id 'd1' (first seen at row 0)",), layout="parquet"),
    Case("parquet-unknown-document", {"qrels.parquet": pa.table({"query_id": ["q1"], "doc_id": ["d5"], "relevance": pa.array([1], pa.int32())})}, ("{data}/qrels.parquet, field 'doc_id': row 0: unknown document 'd5' (not in corpus.parquet)",), layout="parquet"),
    # --- the dataset directory, options, the run directory, the model ---
    Case("data-dir-missing", argv=("ingest", "--data", "{data}/nope", "--out", "{run}"), expect=("{data}/nope: data directory does not exist",)),
    Case("unknown-layout", {C: None}, ("{data}: cannot tell the layout",)),
    Case("unknown-format", argv=("ingest", "--data", "{data}", "--out", "{run}", "--format", "csv"), expect=("--format: unknown value 'csv'; choose from ['auto', 'beir', 'msmarco', 'pairs', 'parquet']",)),
    Case("run-older-schema-version", prepare=old_schema_run, expect=("{run}/manifest.json, field 'schema_version': run directory has schema version 0, this negmine writes version 1",)),
    Case("run-manifest-not-json", prepare=garbage_manifest, expect=("{run}/manifest.json: manifest is not valid JSON",)),
    Case("run-manifest-stages-not-object", prepare=stages_not_a_dict, expect=("{run}/manifest.json, field 'stages': expected an object of stages",)),
    Case("out-is-a-file", argv=("ingest", "--data", "{data}", "--out", "{run}/corpus.parquet"), expect=("{run}/corpus.parquet: run path exists and is not a directory",)),
    Case("out-under-a-file", argv=("ingest", "--data", "{data}", "--out", "{run}/corpus.parquet/sub"), code=FAILURE, expect=("{run}/corpus.parquet/sub: cannot write (Not a directory)",)),
    Case("model-path-missing", argv=("dense", "--run", "{run}", "--model", "{data}/no-such-model"), expect=("{data}/no-such-model, field 'model': model path does not exist",)),
    Case("sample-before-retrieval", argv=("sample", "--run", "{run}", "--source", "bm25"), code=FAILURE, expect=("{run}/candidates_bm25.parquet: missing; run `negmine bm25 --run {run}` first",)),
    Case("bad-param", argv=("sample", "--run", "{run}", "--param", "oops"), expect=("--param: expected NAME=VALUE, got 'oops'",)),
    Case("id-with-rich-markup", {C: jsonl(D1, {"_id": "[/]", "text": "x"}, {"_id": "[/]", "text": "y"})}, ("{data}/corpus.jsonl, line 3, field '_id': duplicate id '[/]'",)),
]


def apply(data: Path, files: dict) -> None:
    for name, content in files.items():
        path = data / name
        if content is None:
            path.unlink()
        elif isinstance(content, pa.Table):
            pq.write_table(content, path)
        elif content == "truncate":
            path.write_bytes(path.read_bytes()[:-20])
        else:
            path.write_bytes(content.encode() if isinstance(content, str) else content)


@pytest.fixture(scope="module")
def existing_run(tmp_path_factory) -> Path:
    """A run directory holding a complete ingest of the good BEIR dataset."""
    base = tmp_path_factory.mktemp("existing")
    run = base / "run"
    result = invoke("ingest", "--data", good_beir(base / "data"), "--out", run)
    assert result.exit_code == 0, result.output
    return run


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_refused_clearly_and_leaves_the_run_as_it_was(case, existing_run, tmp_path):
    data = LAYOUTS[case.layout](tmp_path / "data")
    apply(data, case.files)
    run = tmp_path / "run"
    shutil.copytree(existing_run, run)
    if case.prepare:
        case.prepare(data, run)
    before = tree_hashes(run)
    result = invoke(*(a.format(data=data, run=run) for a in case.argv))
    assert result.exit_code == case.code, result.output
    assert "Traceback" not in result.output
    for expected in case.expect:
        assert expected.format(data=data, run=run) in result.output
    assert tree_hashes(run) == before


def test_the_corpus_has_at_least_twenty_cases():
    assert len(CASES) >= 20


# --- inputs that must be accepted ---


def test_bom_crlf_and_extra_fields_are_accepted(tmp_path):
    corpus = "\ufeff" + jsonl({**D1, "metadata": {"url": "x"}}, D2).replace("\n", "\r\n")
    queries = jsonl(Q1, Q2).replace("\n", "\r\n").encode("utf-8-sig")
    data = write_beir(tmp_path / "data", corpus, queries, GOOD_QRELS.replace("\n", "\r\n"))
    result = invoke("ingest", "--data", data, "--out", tmp_path / "run", "--json")
    assert result.exit_code == 0, result.output
    corpus_table = pq.read_table(tmp_path / "run" / "corpus.parquet")
    assert corpus_table.column("doc_id").to_pylist() == ["d1", "d2"]
    assert corpus_table.column("text").to_pylist() == ["Cats purr.", "Dogs bark."]  # no stray \r
    assert pq.read_table(tmp_path / "run" / "queries.parquet").column("query_id").to_pylist() == ["q1", "q2"]


def test_a_50_mb_line_is_ingested(tmp_path):
    big = "word " * (10 * 2**20)  # 50 MiB of text on one line
    data = write_beir(tmp_path / "data", jsonl(D1, {"_id": "d2", "text": big}), GOOD_QUERIES, GOOD_QRELS)
    result = invoke("ingest", "--data", data, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    texts = pq.read_table(tmp_path / "run" / "corpus.parquet").column("text").to_pylist()
    assert len(texts[1]) == len(big)


def test_a_line_over_the_limit_is_refused_without_reading_it_whole(tmp_path, monkeypatch):
    import negmine.ingest.records

    monkeypatch.setattr(negmine.ingest.records, "MAX_LINE_BYTES", 1024)
    data = write_beir(tmp_path / "data", jsonl(D1, {"_id": "d2", "text": "x" * 5000}), GOOD_QUERIES, GOOD_QRELS)
    result = invoke("ingest", "--data", data, "--out", tmp_path / "run")
    assert result.exit_code == BAD_INPUT
    assert f"{data}/corpus.jsonl, line 2: line longer than 1024 bytes (MAX_LINE_BYTES)" in result.output
