"""A qrels file may repeat a judgement word for word (real qrels files do): the copies are collapsed
into one and counted (``qrels_duplicates_collapsed`` in the ingest stage's stats and summary). The
same (query, document) pair judged twice with different relevance is refused: exit 2, naming the
file and both lines (rows)."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import GOOD_CORPUS, GOOD_QUERIES, invoke, tree_hashes, write_beir

from negmine.errors import BadInputError
from negmine.ingest import ingest

BAD_INPUT = 2


def beir(d, *rows):
    return write_beir(d, GOOD_CORPUS, GOOD_QUERIES, "query-id\tcorpus-id\tscore\n" + "".join("\t".join(r) + "\n" for r in rows))


def msmarco(d, *rows):
    d.mkdir(parents=True)
    (d / "collection.tsv").write_text("d1\tCats purr.\nd2\tDogs bark.\nd3\tBirds sing.\n")
    (d / "queries.train.tsv").write_text("q1\twhat purrs\nq2\twhat barks\n")
    (d / "qrels.train.tsv").write_text("".join(f"{q} 0 {doc} {r}\n" for q, doc, r in rows))
    return d


def parquet(d, *rows):
    d.mkdir(parents=True)
    pq.write_table(pa.table({"doc_id": ["d1", "d2", "d3"], "title": [None] * 3, "text": ["Cats purr.", "Dogs bark.", "Birds sing."]}), d / "corpus.parquet")
    pq.write_table(pa.table({"query_id": ["q1", "q2"], "text": ["what purrs", "what barks"]}), d / "queries.parquet")
    q, doc, r = zip(*rows)
    pq.write_table(pa.table({"query_id": list(q), "doc_id": list(doc), "relevance": pa.array([int(x) for x in r], pa.int32())}), d / "qrels.parquet")
    return d


LAYOUTS = {"beir": (beir, "qrels/train.tsv", "line", 2), "msmarco": (msmarco, "qrels.train.tsv", "line", 1), "parquet": (parquet, "qrels.parquet", "row", 0)}
ROWS = [("q1", "d1", "1"), ("q2", "d2", "1"), ("q1", "d1", "1"), ("q2", "d3", "0"), ("q1", "d1", "1"), ("q2", "d2", "1")]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_identical_judgements_are_collapsed_and_counted(tmp_path, layout):
    make = LAYOUTS[layout][0]
    data = make(tmp_path / "data", *ROWS)
    run = tmp_path / "run"
    result = invoke("ingest", "--data", data, "--out", run, "--json")
    assert result.exit_code == 0, result.output
    qrels = pq.read_table(run / "qrels.parquet")
    pairs = list(zip(*(qrels.column(c).to_pylist() for c in ("query_id", "doc_id", "relevance"))))
    assert sorted(pairs) == [("q1", "d1", 1), ("q2", "d2", 1), ("q2", "d3", 0)]
    stats = json.loads((run / "manifest.json").read_text())["stages"]["ingest"]["stats"]
    assert stats["qrels_duplicates_collapsed"] == 3
    assert stats["qrels"] == 3 and stats["positives"] == 2


def test_the_summary_reports_the_collapsed_copies(tmp_path):
    data = beir(tmp_path / "data", *ROWS)
    result = invoke("ingest", "--data", data, "--out", tmp_path / "run", env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    assert "3 duplicate judgements collapsed" in result.output


def test_a_file_without_copies_counts_none(tmp_path):
    dataset = ingest(beir(tmp_path / "data", *ROWS[:2]))
    assert dataset.stats["qrels_duplicates_collapsed"] == 0


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_conflicting_judgement_is_refused_naming_both_places(tmp_path, layout):
    make, name, unit, first = LAYOUTS[layout]
    data = make(tmp_path / "data", ("q1", "d1", "1"), ("q2", "d2", "1"), ("q1", "d1", "1"), ("q1", "d1", "0"))
    run = tmp_path / "run"
    ok = invoke("ingest", "--data", beir(tmp_path / "good", *ROWS[:2]), "--out", run)
    assert ok.exit_code == 0, ok.output
    before = tree_hashes(run)
    result = invoke("ingest", "--data", data, "--out", run, "--force")
    assert result.exit_code == BAD_INPUT, result.output
    where = f"{unit} {first + 3}"
    expected = f"conflicting judgements for ('q1', 'd1'): relevance 0 at {where}, relevance 1 at {unit} {first}"
    assert str(data / name) in result.output and expected in result.output.replace("\n", ""), result.output
    assert tree_hashes(run) == before


def test_the_python_api_refuses_a_conflict_with_both_lines(tmp_path):
    data = beir(tmp_path / "data", ("q1", "d1", "2"), ("q2", "d2", "1"), ("q1", "d1", "1"))
    with pytest.raises(BadInputError) as info:
        ingest(data)
    assert info.value.path == str(data / "qrels" / "train.tsv") and info.value.line == 4
    assert "relevance 1 at line 4, relevance 2 at line 2" in str(info.value)
