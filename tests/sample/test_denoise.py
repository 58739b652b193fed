"""Denoise (RocketQA) on a hand-made pool, teacher scores through the sample driver, simans score='ce'."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from negmine.errors import StageError
from negmine.io import write_table
from negmine.rundir import Run
from negmine.sample import sample_negatives
from negmine.sample.denoise import likely_false_negatives
from negmine.sample.pool import rng_for
from negmine.schemas import CANDIDATES, POSITIVE_SCORES, QRELS, QUERIES, SCORED_CANDIDATES, SCORED_POSITIVES
from negmine.runners.sample import sample_stage

# ranks 1..55 for query q; rank 3 ("d3") is the labelled positive.
PROBS = {1: 0.95, 2: 0.05, 3: 0.99, 4: 0.5, 5: 0.09, 6: 0.1, 7: 0.91, 51: 0.02, 52: 0.02, 53: 0.95, 54: 0.02, 55: 0.02}


def _prob(rank):
    return PROBS.get(rank, 0.5)


def _tables():
    ranks = list(range(1, 56))
    cand = pa.table(
        {"query_id": ["q"] * 55, "doc_id": [f"d{r}" for r in ranks], "source": ["dense"] * 55, "rank": ranks, "score": [1 - r / 100 for r in ranks]},
        schema=CANDIDATES,
    )
    logit = lambda p: float(np.log(p / (1 - p)))  # noqa: E731
    scored = cand.append_column("ce_score", pa.array([logit(_prob(r)) for r in ranks], pa.float32())).append_column(
        "ce_prob", pa.array([_prob(r) for r in ranks], pa.float32())
    ).cast(SCORED_CANDIDATES)
    pos = pa.table({"query_id": ["q"], "doc_id": ["d3"], "source": ["dense"], "rank": [3], "score": [0.97]}, schema=POSITIVE_SCORES)
    scored_pos = pos.append_column("ce_score", pa.array([logit(0.99)], pa.float32())).append_column("ce_prob", pa.array([0.99], pa.float32())).cast(SCORED_POSITIVES)
    qrels = pa.table({"query_id": ["q"], "doc_id": ["d3"], "relevance": [1]}, schema=QRELS)
    queries = pa.table({"query_id": ["q"], "text": ["a query"]}, schema=QUERIES)
    return cand, pos, qrels, queries, scored, scored_pos


def _sample(num_negatives, **params):
    cand, pos, qrels, queries, scored, scored_pos = _tables()
    return sample_negatives(cand, pos, qrels, queries, "denoise", num_negatives, seed=3, scored_candidates=scored, scored_positives=scored_pos, **params)


def test_keeps_top_candidates_below_threshold_then_backfills_beyond_rank_50():
    negatives, stats = _sample(4)
    rows = negatives.to_pylist()
    assert [r["neg_id"] for r in rows[:2]] == ["d2", "d5"]  # prob 0.05 and 0.09 < 0.1; 0.1 itself (d6) is not below
    backfill = [r["neg_id"] for r in rows[2:]]
    assert len(backfill) == 2 and set(backfill) <= {"d51", "d52", "d54", "d55"}  # d53 (0.95) is a likely false negative
    # the backfill is rng.choice over the pool indices of ranks > 50 with prob <= 0.9 (pool has d3 removed: rank r -> index r - 2)
    beyond = np.array([49, 50, 52, 53])
    expected = rng_for(3, "q", "d3").choice(beyond, size=2, replace=False)
    assert backfill == [f"d{i + 2}" for i in expected]
    assert [r["source_rank"] for r in rows[:2]] == [2, 5]
    # teacher scores fill ce_score / pos_ce_score
    np.testing.assert_allclose([r["ce_score"] for r in rows[:2]], [np.log(0.05 / 0.95), np.log(0.09 / 0.91)], rtol=1e-5)
    np.testing.assert_allclose([r["pos_ce_score"] for r in rows], [np.log(0.99 / 0.01)] * 4, rtol=1e-5)
    assert stats["pairs_short_of_num_negatives"] == 0


def test_few_negatives_need_no_backfill_and_an_empty_backfill_leaves_the_pair_short():
    negatives, _ = _sample(1)
    assert negatives.column("neg_id").to_pylist() == ["d2"]
    negatives, stats = _sample(10, top=60)  # everything is "top": only d2, d5, d51, d52, d54, d55 pass, nothing beyond
    assert negatives.column("neg_id").to_pylist() == ["d2", "d5", "d51", "d52", "d54", "d55"]
    assert stats["pairs_short_of_num_negatives"] == 1


def test_thresholds_are_parameters():
    negatives, _ = _sample(3, negative_below=0.6, top=5)  # top 5 without d3: d1 .95, d2 .05, d4 .5, d5 .09
    assert negatives.column("neg_id").to_pylist()[:3] == ["d2", "d4", "d5"]
    with pytest.raises(StageError, match="denoise needs 0 <= negative_below <= positive_above <= 1, got 0.95 and 0.9"):
        _sample(3, negative_below=0.95)


def test_likely_false_negatives_are_unlabelled_top_candidates_above_threshold():
    cand, _, qrels, _, scored, _ = _tables()
    pseudo = likely_false_negatives(scored, qrels)
    assert pseudo.to_pylist() == [
        {"query_id": "q", "doc_id": "d1", "source_rank": 1, "ce_prob": pytest.approx(0.95)},
        {"query_id": "q", "doc_id": "d7", "source_rank": 7, "ce_prob": pytest.approx(0.91)},
    ]  # d3 is labelled; d53 lies beyond rank 50
    assert likely_false_negatives(scored, qrels, top=60).column("doc_id").to_pylist() == ["d1", "d7", "d53"]


def test_denoise_without_teacher_scores_names_the_fix():
    cand, pos, qrels, queries, _, _ = _tables()
    with pytest.raises(StageError, match=r"strategy 'denoise' needs teacher scores; run `negmine rescore --teacher \.\.\.` on this source first"):
        sample_negatives(cand, pos, qrels, queries, "denoise", 3)


def test_simans_on_teacher_scores():
    cand, pos, qrels, queries, scored, scored_pos = _tables()
    # a huge a puts all mass on the candidate whose score is closest to the positive's
    by_ce, _ = sample_negatives(cand, pos, qrels, queries, "simans", 1, scored_candidates=scored, scored_positives=scored_pos, a=1e6, b=0.0, score="ce")
    by_retriever, _ = sample_negatives(cand, pos, qrels, queries, "simans", 1, scored_candidates=scored, scored_positives=scored_pos, a=1e6, b=0.0)
    assert by_ce.column("neg_id").to_pylist() in (["d1"], ["d53"])  # ce prob .95, the closest to the positive's .99
    assert by_retriever.column("neg_id").to_pylist() in (["d2"], ["d4"])  # retriever .98 / .96 vs the positive's .97
    with pytest.raises(StageError, match="SimANS score='ce' needs teacher scores of every candidate"):
        sample_negatives(cand, pos, qrels, queries, "simans", 1, score="ce")


def test_sample_stage_writes_pseudo_positives_and_counts_false_negatives(tmp_path):
    cand, pos, qrels, queries, scored, scored_pos = _tables()
    run = Run.open(tmp_path / "run")
    with pytest.raises(StageError, match="strategy 'denoise' needs teacher scores, run `negmine rescore"):
        write_table(cand, run.file("candidates_dense.parquet"), CANDIDATES)
        write_table(pos, run.file("positive_scores_dense.parquet"), POSITIVE_SCORES)
        write_table(qrels, run.file("qrels.parquet"), QRELS)
        write_table(queries, run.file("queries.parquet"), QUERIES)
        sample_stage(run, "denoise", dedup=False)
    write_table(scored, run.file("scored_candidates_dense.parquet"), SCORED_CANDIDATES)
    write_table(scored_pos, run.file("scored_positives_dense.parquet"), SCORED_POSITIVES)
    result = sample_stage(run, "denoise", num_negatives=4, params={"pseudo_positives": True}, dedup=False)
    assert result.entry["stats"]["likely_false_negatives"] == 2
    assert result.entry["stats"]["queries_with_likely_false_negatives"] == 1
    assert pq.read_table(run.file("pseudo_positives_denoise.parquet")).column("doc_id").to_pylist() == ["d1", "d7"]
    assert set(result.entry["outputs"]) == {"negatives_denoise.parquet", "pseudo_positives_denoise.parquet"}


def _write_run(path, cand, pos, qrels, queries, scored, scored_pos):
    run = Run.open(path)
    for name, table, schema in (("candidates_dense", cand, CANDIDATES), ("positive_scores_dense", pos, POSITIVE_SCORES), ("qrels", qrels, QRELS),
                                ("queries", queries, QUERIES), ("scored_candidates_dense", scored, scored.schema),
                                ("scored_positives_dense", scored_pos, scored_pos.schema)):
        write_table(table, run.file(f"{name}.parquet"), schema)
    return run


def test_with_two_teachers_the_chosen_one_gives_what_a_run_with_it_alone_gives(tmp_path):
    from negmine.errors import BadInputError
    from negmine.teachers import described, parse_teachers, scored_schema

    cand, pos, qrels, queries, scored, scored_pos = _tables()
    # a second teacher that disagrees: the reverse of the first's probabilities
    flipped = {name: pa.array(1 - table.column("ce_prob").to_numpy(), pa.float32()) for name, table in (("cand", scored), ("pos", scored_pos))}
    second = {name: pa.array(np.log(p.to_numpy() / (1 - p.to_numpy())), pa.float32()) for name, p in flipped.items()}
    teachers = described(parse_teachers(["cross-encoder:/a", "rev=cross-encoder:/b"]), ["cross-encoder"] * 2, ["/a", "/b"])
    both = [table.append_column("ce_score_rev", second[name]).append_column("ce_prob_rev", flipped[name]).cast(scored_schema(base, teachers))
            for name, table, base in (("cand", scored, SCORED_CANDIDATES), ("pos", scored_pos, SCORED_POSITIVES))]
    alone = [table.set_column(table.schema.get_field_index("ce_score"), "ce_score", second[name]).set_column(
        table.schema.get_field_index("ce_prob"), "ce_prob", flipped[name]).cast(base)
        for name, table, base in (("cand", scored, SCORED_CANDIDATES), ("pos", scored_pos, SCORED_POSITIVES))]
    together = _write_run(tmp_path / "both", cand, pos, qrels, queries, *both)
    rev_alone = _write_run(tmp_path / "rev", cand, pos, qrels, queries, *alone)
    first_alone = _write_run(tmp_path / "first", cand, pos, qrels, queries, scored, scored_pos)
    for strategy, params in (("denoise", {"pseudo_positives": True}), ("simans", {"score": "ce", "a": 1e6, "b": 0.0})):
        picked = {}
        for label, run in (("rev", together), ("rev-alone", rev_alone), ("t1", together), ("first", together), ("first-alone", first_alone)):
            name = {"rev": "rev", "t1": "t1"}.get(label)
            sample_stage(run, strategy, num_negatives=4, params=params, dedup=False, teacher_name=name, force=True)
            picked[label] = pq.read_table(run.file(f"negatives_{strategy}.parquet")).to_pylist()
        assert picked["rev"] == picked["rev-alone"] and picked["t1"] == picked["first"] == picked["first-alone"]
        assert picked["rev"] != picked["first"]
    config = __import__("json").loads(together.file("manifest.json").read_text())["stages"]["sample.simans"]["config"]
    assert "teacher_name" not in config  # the last sample took the first teacher, as a run without the option
    with pytest.raises(BadInputError, match=r"unknown teacher 'big'; the run's teachers are \['t1', 'rev'\]"):
        sample_stage(together, "denoise", teacher_name="big", dedup=False, force=True)
