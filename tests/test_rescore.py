"""Rescore: a small real CrossEncoder (MiniLM weights, fresh 1-label head) and the bi-encoder as teacher."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from negmine.cli import app
from negmine.errors import BadInputError
from negmine.io import write_table
from negmine.rescore import load_teacher, parse_teacher, teacher_probs
from negmine.rundir import Run
from negmine.schemas import CANDIDATES, CORPUS, POSITIVE_SCORES, QRELS, QUERIES, SCORED_CANDIDATES, SCORED_POSITIVES
from negmine.runners.rescore import rescore_stage

DOCS = {"d1": ("Cats", "Cats purr when content."), "d2": ("", "Dogs bark at strangers."), "d3": ("Birds", "Birds sing at dawn."), "d4": (None, "Fish swim.")}
QUERIES_ = {"q1": "what purrs", "q2": "what barks"}


@pytest.fixture(scope="module")
def cross_encoder_dir(tmp_path_factory, model_path):
    import torch
    from sentence_transformers import CrossEncoder

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("teacher") / "minilm-ce"
    CrossEncoder(model_path, num_labels=1, max_length=64).save(str(path))
    return path


@pytest.fixture
def run(tmp_path):
    run = Run.open(tmp_path / "run")
    rows = lambda schema, cols: pa.table(cols, schema=schema)  # noqa: E731
    write_table(rows(CORPUS, {"doc_id": list(DOCS), "title": [t for t, _ in DOCS.values()], "text": [x for _, x in DOCS.values()]}), run.file("corpus.parquet"), CORPUS)
    write_table(rows(QUERIES, {"query_id": list(QUERIES_), "text": list(QUERIES_.values())}), run.file("queries.parquet"), QUERIES)
    write_table(rows(QRELS, {"query_id": ["q1", "q2"], "doc_id": ["d1", "d2"], "relevance": [1, 1]}), run.file("qrels.parquet"), QRELS)
    cand = {"query_id": ["q1", "q1", "q1", "q2", "q2"], "doc_id": ["d1", "d3", "d4", "d3", "d4"], "source": ["dense"] * 5,
            "rank": [1, 2, 3, 1, 2], "score": [0.9, 0.5, 0.1, 0.4, 0.2]}
    write_table(rows(CANDIDATES, cand), run.file("candidates_dense.parquet"), CANDIDATES)
    pos = {"query_id": ["q1", "q2"], "doc_id": ["d1", "d2"], "source": ["dense"] * 2, "rank": [1, None], "score": [0.9, 0.7]}
    write_table(rows(POSITIVE_SCORES, pos), run.file("positive_scores_dense.parquet"), POSITIVE_SCORES)
    return run


def _text(did):
    title, text = DOCS[did]
    return f"{title} {text}".strip() if title else text


def test_cross_encoder_teacher_scores_are_the_model_logits(run, cross_encoder_dir):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    result = rescore_stage(run, f"cross-encoder:{cross_encoder_dir}", max_length=64, batch_size=2)
    scored = pq.read_table(run.file("scored_candidates_dense.parquet"))
    scored_pos = pq.read_table(run.file("scored_positives_dense.parquet"))
    assert scored.schema.names == SCORED_CANDIDATES.names and scored_pos.schema.names == SCORED_POSITIVES.names
    # the candidates' own columns pass through unchanged
    assert scored.select(CANDIDATES.names).to_pylist() == pq.read_table(run.file("candidates_dense.parquet")).to_pylist()
    # reference: plain transformers on the saved model, logits of (query, title + text)
    tok = AutoTokenizer.from_pretrained(cross_encoder_dir)
    model = AutoModelForSequenceClassification.from_pretrained(cross_encoder_dir).eval()
    pairs = [(r["query_id"], r["doc_id"]) for r in scored.to_pylist()] + [(r["query_id"], r["doc_id"]) for r in scored_pos.to_pylist()]
    with torch.no_grad():
        enc = tok([QUERIES_[q] for q, _ in pairs], [_text(d) for _, d in pairs], padding=True, truncation=True, max_length=64, return_tensors="pt")
        logits = model(**enc).logits[:, 0].numpy()
    got = np.concatenate([scored.column("ce_score").to_numpy(), scored_pos.column("ce_score").to_numpy()])
    np.testing.assert_allclose(got, logits, atol=1e-4)
    probs = np.concatenate([scored.column("ce_prob").to_numpy(), scored_pos.column("ce_prob").to_numpy()])
    np.testing.assert_allclose(probs, 1 / (1 + np.exp(-logits)), atol=1e-5)
    # the positive that retrieval missed (q2, d2) is scored too; the retrieved one agrees with its candidate row
    assert scored_pos.column("doc_id").to_pylist() == ["d1", "d2"]
    assert scored_pos.column("ce_score")[0].as_py() == scored.column("ce_score")[0].as_py()
    assert result.entry["stats"]["teacher_kind"] == "cross-encoder" and result.entry["stats"]["candidates"] == 5
    manifest = json.loads(run.file("manifest.json").read_text())
    assert manifest["stages"]["rescore.dense"]["config"]["teacher"] == f"cross-encoder:{cross_encoder_dir.resolve()}"
    assert rescore_stage(run, str(cross_encoder_dir), max_length=64, batch_size=5).skipped  # plain path = cross-encoder, same config


def test_bi_encoder_teacher_is_cosine_and_prob_is_its_rescale(run, model_path):
    from sentence_transformers import SentenceTransformer

    rescore_stage(run, f"bi-encoder:{model_path}", max_length=64)
    scored = pq.read_table(run.file("scored_candidates_dense.parquet")).to_pylist()
    st = SentenceTransformer(model_path)
    st.max_seq_length = 64
    q = st.encode([QUERIES_[r["query_id"]] for r in scored], normalize_embeddings=True)
    d = st.encode([_text(r["doc_id"]) for r in scored], normalize_embeddings=True)
    cos = (q * d).sum(axis=1)
    np.testing.assert_allclose([r["ce_score"] for r in scored], cos, atol=1e-5)
    np.testing.assert_allclose([r["ce_prob"] for r in scored], (cos + 1) / 2, atol=1e-5)


def test_a_bi_encoder_passed_as_cross_encoder_is_refused(model_path):
    with pytest.raises(BadInputError) as info:
        load_teacher(model_path)
    assert str(info.value) == (
        f"{model_path}, field 'teacher': not a cross-encoder (config.json has no *ForSequenceClassification "
        f"architecture); to use a bi-encoder as teacher pass --teacher bi-encoder:{model_path}"
    )


def test_parse_teacher():
    assert parse_teacher("cross-encoder:/m") == ("cross-encoder", "/m")
    assert parse_teacher("bi-encoder:org/model") == ("bi-encoder", "org/model")
    assert parse_teacher("cross-encoder/ms-marco-MiniLM-L6-v2") == ("cross-encoder", "cross-encoder/ms-marco-MiniLM-L6-v2")
    with pytest.raises(BadInputError, match=r"unknown teacher kind 'colbert'; choose from \['bi-encoder', 'cross-encoder'\]"):
        parse_teacher("colbert:/m")


def test_teacher_probs_formulas():
    np.testing.assert_allclose(teacher_probs(np.array([0.0, 2.0, -3.0]), "cross-encoder"), [0.5, 1 / (1 + np.exp(-2.0)), 1 / (1 + np.exp(3.0))], rtol=1e-6)
    np.testing.assert_allclose(teacher_probs(np.array([-1.0, 0.0, 0.6]), "bi-encoder"), [0.0, 0.5, 0.8], rtol=1e-6)


def test_rescore_cli_without_retrieval_names_the_fix(tmp_path):
    result = CliRunner().invoke(app, ["rescore", "--run", str(tmp_path / "r"), "--teacher", "bi-encoder:x"])
    assert result.exit_code == 1
    assert f"candidates_dense.parquet: missing; run `negmine dense --run {tmp_path / 'r'}` first" in result.output.replace("\n", "")


def _copy_inputs(run, tmp_path, name):
    """A second run directory with the same candidates, positives, corpus and queries."""
    import shutil

    other = Run.open(tmp_path / name)
    for table in ("corpus", "queries", "qrels", "candidates_dense", "positive_scores_dense"):
        shutil.copy(run.file(f"{table}.parquet"), other.file(f"{table}.parquet"))
    return other


def test_several_teachers_are_stored_side_by_side_each_as_its_own_run_scores_it(run, tmp_path, cross_encoder_dir, model_path):
    from negmine.teachers import read_scored, teachers_of

    ce, bi = f"cross-encoder:{cross_encoder_dir}", f"bi-encoder:{model_path}"
    result = rescore_stage(run, [ce, f"mini=bi-encoder:{model_path}"], max_length=64, batch_size=2)
    alone = {}
    for name, spec in (("ce", ce), ("bi", bi)):
        single = _copy_inputs(run, tmp_path, name)
        rescore_stage(single, spec, max_length=64, batch_size=2)
        alone[name] = [pq.read_table(single.file(f"scored_{t}_dense.parquet")) for t in ("candidates", "positives")]
    for i, (table, base) in enumerate((("candidates", SCORED_CANDIDATES), ("positives", SCORED_POSITIVES))):
        path = run.file(f"scored_{table}_dense.parquet")
        both, schema = read_scored(path, base, table)
        assert pq.read_schema(path).names == base.names + ["ce_score_mini", "ce_prob_mini"]
        assert [t["label"] for t in teachers_of(schema)] == ["t1", "mini"]
        # the first teacher's columns are the one-teacher run's table, column for column; the second's are its own run's scores
        assert both.select(base.names).equals(alone["ce"][i])
        assert both.column("ce_score_mini").equals(alone["bi"][i].column("ce_score"))
        assert both.column("ce_prob_mini").equals(alone["bi"][i].column("ce_prob"))
        assert not both.column("ce_score").equals(both.column("ce_score_mini"))
    stats = result.entry["stats"]
    assert [(t["label"], t["kind"], t["score_column"]) for t in stats["teachers"]] == [("t1", "cross-encoder", "ce_score"), ("mini", "bi-encoder", "ce_score_mini")]
    assert stats["teacher_kind"] == "cross-encoder" and stats["candidate_prob_mean"] == stats["teachers"][0]["candidate_prob_mean"]
    config = json.loads(run.file("manifest.json").read_text())["stages"]["rescore.dense"]["config"]
    assert config["teacher"] == [f"t1=cross-encoder:{cross_encoder_dir.resolve()}", f"mini=bi-encoder:{model_path}"]
    assert rescore_stage(run, [ce, f"mini=bi-encoder:{model_path}"], max_length=64).skipped
    # the false-negative model's signals take every teacher's scores
    from negmine.runners.false_negatives import signals

    assert signals(run, "dense")[0].names == ["retriever_z", "retriever_margin", "log_rank", "teacher_z", "teacher_margin", "teacher_z_mini", "teacher_margin_mini"]
    # a one-teacher list is the one-teacher run: the same config, so the same (skipped) stage
    assert rescore_stage(_copy_inputs(run, tmp_path, "ce"), [ce], max_length=64, batch_size=2).skipped


@pytest.mark.parametrize(("args", "reason"), [
    (["--teacher", "a=bi-encoder:x", "--teacher", "a=bi-encoder:y"], "the label 'a' names two teachers"),
    (["--teacher", "bi-encoder:x", "--teacher", "t1=bi-encoder:y"], "the label 't1' names two teachers"),
    (["--teacher", "bi-encoder:x", "--teacher", "x="], "a label needs a teacher after '='"),
])
def test_bad_teacher_lists_exit_2_naming_the_option(tmp_path, args, reason):
    result = CliRunner().invoke(app, ["rescore", "--run", str(tmp_path / "r"), *args])
    assert result.exit_code == 2
    assert "--teacher" in result.output and reason in result.output.replace("\n", "")
