"""mine --strategy denoise end to end on sample_data with a bi-encoder teacher, and its 'needs a teacher' error."""

import json

import pyarrow.parquet as pq


from conftest import SAMPLE, invoke





def test_mine_denoise_with_a_bi_encoder_teacher(tmp_path, model_path):
    run = tmp_path / "denoise"
    result = invoke(
        "mine", "--data", SAMPLE, "--out", run, "--strategy", "denoise", "--teacher", f"bi-encoder:{model_path}", "--model", model_path,
        "--max-seq-length", 32, "--teacher-max-length", 32, "--k", 30, "--num-negatives", 3,
        # bi-encoder ce_prob = (cos + 1) / 2: thresholds on that scale
        "--param", "top=10", "--param", "negative_below=0.6", "--param", "positive_above=0.8", "--param", "pseudo_positives=true", "--json",
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert set(summary) == {"ingest", "embed", "dense", "rescore.dense", "duplicates", "sample.denoise"}
    assert summary["rescore.dense"]["stats"]["teacher_kind"] == "bi-encoder"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["stages"]["rescore.dense"]["config"]["max_length"] == 32
    assert manifest["stages"]["sample.denoise"]["config"]["params"] == {"top": 10, "negative_below": 0.6, "positive_above": 0.8, "pseudo_positives": True}

    prob = {(r["query_id"], r["doc_id"]): r["ce_prob"] for r in pq.read_table(run / "scored_candidates_dense.parquet").to_pylist()}
    negatives = pq.read_table(run / "negatives_denoise.parquet").to_pylist()
    assert negatives and all(r["strategy"] == "denoise" and r["ce_score"] is not None for r in negatives)
    qrels = {(r["query_id"], r["doc_id"]) for r in pq.read_table(run / "qrels.parquet").to_pylist()}
    for r in negatives:
        assert (r["query_id"], r["neg_id"]) not in qrels
        p = prob[(r["query_id"], r["neg_id"])]
        assert p < 0.6 if r["source_rank"] <= 10 else p <= 0.8  # top: below negative_below; backfill: never a likely false negative
    assert {r["source_rank"] <= 10 for r in negatives} == {True, False}  # both the top window and the backfill are exercised
    pseudo = pq.read_table(run / "pseudo_positives_denoise.parquet").to_pylist()
    assert pseudo
    assert summary["sample.denoise"]["stats"]["likely_false_negatives"] == len(pseudo)
    assert all(r["source_rank"] <= 10 and r["ce_prob"] > 0.8 and (r["query_id"], r["doc_id"]) not in qrels for r in pseudo)
    assert not {(r["query_id"], r["neg_id"]) for r in negatives} & {(r["query_id"], r["doc_id"]) for r in pseudo}


def test_mine_denoise_without_a_teacher_names_the_fix(tmp_path):
    run = tmp_path / "r"
    result = invoke("mine", "--data", SAMPLE, "--out", run, "--strategy", "denoise", "--source", "bm25", "--bm25-backend", "bm25s")
    assert result.exit_code == 2
    assert result.stderr.replace("\n", "") == (
        "error: --teacher: strategy 'denoise' needs a teacher; pass --teacher cross-encoder:NAME_OR_PATH (or bi-encoder:NAME_OR_PATH)"
    )
    assert not list(run.glob("*.parquet"))  # refused before any stage ran
