"""Fuzzing the readers (hypothesis, bounded): arbitrary bytes or lines in corpus.jsonl, queries.jsonl
and the qrels TSV give either a valid Dataset or BadInputError, never another exception."""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from negmine.errors import BadInputError
from negmine.ingest import Dataset, ingest

from helpers import GOOD_CORPUS, GOOD_QRELS, GOOD_QUERIES, write_beir

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
FILES = {"corpus": 0, "queries": 1, "qrels": 2}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["_id", "text", "title", "x"]), inner, max_size=4),
    max_leaves=8,
)
json_lines = st.lists(json_values.map(lambda v: json.dumps(v).encode()), max_size=5).map(lambda ls: b"\n".join(ls))
tsv_lines = st.lists(
    st.lists(st.sampled_from(["q1", "q2", "d1", "d2", "d3", "1", "0", "-1", "", " ", "x", "１", "1_0", "99999999999"]), max_size=4).map(lambda r: "\t".join(r).encode()),
    max_size=5,
).map(lambda ls: b"query-id\tcorpus-id\tscore\n" + b"\r\n".join(ls))
raw_bytes = st.binary(max_size=300)


def check(tmp_path_factory, which: str, content: bytes) -> None:
    files = [GOOD_CORPUS.encode(), GOOD_QUERIES.encode(), GOOD_QRELS.encode()]
    files[FILES[which]] = content
    data = write_beir(tmp_path_factory.mktemp("fuzz"), *files)
    try:
        result = ingest(data)
    except BadInputError as exc:
        assert str(data) in str(exc)  # names the file
        return
    assert isinstance(result, Dataset)
    assert result.corpus.num_rows > 0 and result.qrels.num_rows > 0


@FUZZ
@given(which=st.sampled_from(sorted(FILES)), content=raw_bytes | json_lines | tsv_lines)
def test_any_bytes_give_a_dataset_or_bad_input(tmp_path_factory, which, content):
    check(tmp_path_factory, which, content)


@FUZZ
@given(prefix=st.sampled_from(sorted(FILES)), junk=st.text(max_size=80))
def test_valid_file_with_one_junk_line_gives_a_dataset_or_bad_input(tmp_path_factory, prefix, junk):
    files = {"corpus": GOOD_CORPUS, "queries": GOOD_QUERIES, "qrels": GOOD_QRELS}
    check(tmp_path_factory, prefix, (files[prefix] + junk + "\n").encode("utf-8", "surrogatepass"))
