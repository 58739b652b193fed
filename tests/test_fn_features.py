"""The false-negative model's signals with several teachers: each teacher adds its own z-score and margin."""

import numpy as np
import pyarrow as pa

from negmine.fn_features import build_features
from negmine.schemas import CANDIDATES, POSITIVE_SCORES, QRELS, SCORED_CANDIDATES, SCORED_POSITIVES
from negmine.teachers import described, parse_teachers, scored_schema


def _tables():
    # query a: positives pa1 (rank 1), pa2 (rank 3); candidates x (rank 2), y (rank 4)
    cand = pa.table({"query_id": ["a"] * 4, "doc_id": ["pa1", "x", "pa2", "y"], "source": ["dense"] * 4, "rank": [1, 2, 3, 4],
                     "score": [0.9, 0.8, 0.7, 0.5]}, schema=CANDIDATES)
    pos = pa.table({"query_id": ["a", "a"], "doc_id": ["pa1", "pa2"], "source": ["dense"] * 2, "rank": [1, 3], "score": [0.9, 0.7]}, schema=POSITIVE_SCORES)
    qrels = pa.table({"query_id": ["a", "a"], "doc_id": ["pa1", "pa2"], "relevance": [1, 1]}, schema=QRELS)
    return cand, pos, qrels


def _scored(table, base, first, second):
    teachers = described(parse_teachers(["cross-encoder:/ce", "mini=bi-encoder:/m"]), ["cross-encoder", "bi-encoder"], ["/ce", "/m"])
    for column, values in (("ce_score", first), ("ce_prob", [0.5] * len(first)), ("ce_score_mini", second), ("ce_prob_mini", [0.5] * len(second))):
        table = table.append_column(column, pa.array(values, pa.float32()))
    return table.cast(scored_schema(base, teachers))


def test_every_teacher_gives_its_own_z_score_and_margin():
    cand, pos, qrels = _tables()
    first, second = [5.0, 4.0, 3.0, 1.0], [0.2, 0.9, 0.6, 0.1]  # per candidate row pa1, x, pa2, y
    scored = _scored(cand, SCORED_CANDIDATES, first, second)
    scored_pos = _scored(pos, SCORED_POSITIVES, [5.0, 3.0], [0.2, 0.6])
    f = build_features(cand, pos, qrels, scored, scored_pos)
    assert f.names == ["retriever_z", "retriever_margin", "log_rank", "teacher_z", "teacher_margin", "teacher_z_mini", "teacher_margin_mini"]
    mu1, sd1 = np.mean(first), np.std(first)
    mu2, sd2 = np.mean(second), np.std(second)
    # candidate x: first teacher 4 against the best positive 5; second 0.9 against the best positive 0.6
    np.testing.assert_allclose(f.candidates[0, 3:], [(4 - mu1) / sd1, (4 - 5) / sd1, (0.9 - mu2) / sd2, (0.9 - 0.6) / sd2], rtol=1e-5)
    # labelled positive pa1, each teacher against the other positive
    np.testing.assert_allclose(f.positives[0, 3:], [(5 - mu1) / sd1, (5 - 3) / sd1, (0.2 - mu2) / sd2, (0.2 - 0.6) / sd2], rtol=1e-5)
    # the first teacher's signals are those of a run with that teacher alone
    alone = build_features(cand, pos, qrels, scored.select(SCORED_CANDIDATES.names).cast(SCORED_CANDIDATES),
                           scored_pos.select(SCORED_POSITIVES.names).cast(SCORED_POSITIVES))
    np.testing.assert_array_equal(f.candidates[:, :5], alone.candidates)
    np.testing.assert_array_equal(f.positives[:, :5], alone.positives)
