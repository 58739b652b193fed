"""The signals of the false-negative model (negmine.fn_model), each computed the same way for a candidate d
of query q and for a labelled positive p:

- ``retriever_z``       (s(q, d) − μ_q) / σ_q, the retriever score standardised over q's candidate list;
- ``retriever_margin``  (s(q, d) − max_{p ∈ P_q} s(q, p)) / σ_q, the gap to the query's best positive
                         (for a labelled positive p: to the best *other* positive);
- ``log_rank``          log of d's rank in the candidate list;
- ``teacher_z``, ``teacher_margin``   the same two with the teacher's scores (``negmine rescore``), when
                         present; with several teachers (negmine.teachers) each adds its own pair,
                         ``teacher_z_<label>``, ``teacher_margin_<label>``, after the first's;
- ``other_log_rank``    log of d's rank in the other retriever's list (bm25 for dense, dense for bm25;
                         K_other + 1 when it did not retrieve d), when that list exists: agreement;

and whether d's text duplicates one of q's positives (``negmine.duplicates``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa


def teacher_columns(scored: pa.Table) -> list[str]:
    """The raw-score columns of every teacher a scored table holds, the first (``ce_score``) first."""
    return [c for c in scored.column_names if c == "ce_score" or c.startswith("ce_score_")]


@dataclass
class Features:
    """Signals of the candidates (unlabelled) and of the labelled positives (the PU labelled class)."""

    names: list[str]
    candidates: np.ndarray  # (n, f)
    query_ids: list[str]
    doc_ids: list[str]
    ranks: np.ndarray  # int32, the candidate's source rank
    duplicate: np.ndarray  # bool, the candidate duplicates one of its query's positives
    positives: np.ndarray  # (m, f)
    positive_query_ids: list[str]
    list_size: int = 0  # K, the deepest candidate rank


def _per_query(keys: np.ndarray, values: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of ``values`` per query index ``keys`` (std 1 where it is 0 or undefined)."""
    count = np.bincount(keys, minlength=n).astype(np.float64)
    total = np.bincount(keys, weights=values, minlength=n)
    mean = np.divide(total, count, out=np.zeros(n), where=count > 0)
    sq = np.bincount(keys, weights=(values - mean[keys]) ** 2, minlength=n)
    std = np.sqrt(np.divide(sq, count, out=np.zeros(n), where=count > 0))
    return mean, np.where(std > 1e-12, std, 1.0)


def _best_other(scores: dict[str, float], pos: str) -> float | None:
    others = [s for p, s in scores.items() if p != pos and s is not None]
    return max(others) if others else None


def build_features(
    candidates: pa.Table,
    positive_scores: pa.Table,
    qrels: pa.Table,
    scored_candidates: pa.Table | None = None,
    scored_positives: pa.Table | None = None,
    other_candidates: pa.Table | None = None,
    other_positive_scores: pa.Table | None = None,
    duplicates: pa.Table | None = None,
) -> Features:
    """The signals of every candidate of a labelled query (labelled positives left out) and of every
    retrieved labelled positive of a query with at least two positives."""
    positives: dict[str, set[str]] = {}
    for q, d, r in zip(*(qrels.column(c).to_pylist() for c in ("query_id", "doc_id", "relevance"))):
        if r > 0:
            positives.setdefault(q, set()).add(d)
    cq = candidates.column("query_id").to_pylist()
    cd = candidates.column("doc_id").to_pylist()
    crank = candidates.column("rank").to_numpy().astype(np.int64)
    cscore = candidates.column("score").to_numpy().astype(np.float64)
    queries = sorted({q for q in cq if q in positives})
    qindex = {q: i for i, q in enumerate(queries)}
    in_list = np.array([q in qindex for q in cq], dtype=bool)
    keys = np.array([qindex.get(q, 0) for q in cq], dtype=np.int64)
    nq = len(queries)
    mu, sigma = _per_query(keys[in_list], cscore[in_list], nq)
    list_size = int(crank.max()) if len(crank) else 0

    pos_score: dict[str, dict[str, float]] = {}
    pos_rank: dict[tuple[str, str], int | None] = {}
    for q, d, rank, s in zip(*(positive_scores.column(c).to_pylist() for c in ("query_id", "doc_id", "rank", "score"))):
        if d in positives.get(q, ()):
            pos_score.setdefault(q, {})[d] = s
            pos_rank[(q, d)] = rank

    names = ["retriever_z", "retriever_margin", "log_rank"]
    teachers = []  # per teacher: (score per candidate row, its positives' scores per query, μ, σ per query)
    if scored_candidates is not None and scored_positives is not None:
        for column in teacher_columns(scored_candidates):
            suffix = column.removeprefix("ce_score")
            names += [f"teacher_z{suffix}", f"teacher_margin{suffix}"]
            t_of = {(q, d): s for q, d, s in zip(*(scored_candidates.column(c).to_pylist() for c in ("query_id", "doc_id", column)))}
            t_pos: dict[str, dict[str, float]] = {}
            for q, d, s in zip(*(scored_positives.column(c).to_pylist() for c in ("query_id", "doc_id", column))):
                if d in positives.get(q, ()):
                    t_pos.setdefault(q, {})[d] = s
            ct = np.array([t_of.get((q, d), np.nan) for q, d in zip(cq, cd)], dtype=np.float64)
            ok = in_list & ~np.isnan(ct)
            teachers.append((ct, t_pos, *_per_query(keys[ok], ct[ok], nq)))
    other = other_candidates is not None
    if other:
        names.append("other_log_rank")
        o_rank = {(q, d): r for q, d, r in zip(*(other_candidates.column(c).to_pylist() for c in ("query_id", "doc_id", "rank")))}
        o_depth = (max(o_rank.values()) if o_rank else 0) + 1
        if other_positive_scores is not None:
            for q, d, r in zip(*(other_positive_scores.column(c).to_pylist() for c in ("query_id", "doc_id", "rank"))):
                if r is not None:
                    o_rank.setdefault((q, d), r)
    dup_of: dict[str, set[str]] = {}
    if duplicates is not None:
        for d, p in zip(duplicates.column("doc_id").to_pylist(), duplicates.column("dup_of").to_pylist()):
            dup_of.setdefault(d, set()).add(p)

    rows, row_q, row_d, row_rank, row_dup = [], [], [], [], []
    for i in np.flatnonzero(in_list):
        q, d = cq[i], cd[i]
        if d in positives[q]:
            continue
        k = keys[i]
        best = max((s for s in pos_score.get(q, {}).values() if s is not None), default=None)
        feats = [(cscore[i] - mu[k]) / sigma[k], ((cscore[i] - best) / sigma[k]) if best is not None else np.nan, np.log(crank[i])]
        for ct, t_pos, tmu, tsigma in teachers:
            tbest = max((s for s in t_pos.get(q, {}).values() if s is not None), default=None)
            feats += [(ct[i] - tmu[k]) / tsigma[k], ((ct[i] - tbest) / tsigma[k]) if tbest is not None else np.nan]
        if other:
            feats.append(np.log(o_rank.get((q, d), o_depth)))
        rows.append(feats)
        row_q.append(q)
        row_d.append(d)
        row_rank.append(int(crank[i]))
        row_dup.append(bool(dup_of.get(d, set()) & positives[q]))

    pos_rows, pos_q = [], []
    for q in queries:
        scores = pos_score.get(q, {})
        if len(positives[q]) < 2:
            continue
        k = qindex[q]
        for p in sorted(positives[q]):
            rank, s = pos_rank.get((q, p)), scores.get(p)
            best = _best_other(scores, p)
            if rank is None or s is None or best is None:  # only positives the retriever returned: as the candidates
                continue
            feats = [(s - mu[k]) / sigma[k], (s - best) / sigma[k], np.log(rank)]
            scored = [(t_pos.get(q, {}).get(p), _best_other(t_pos.get(q, {}), p), tmu, tsigma) for _, t_pos, tmu, tsigma in teachers]
            if any(ts is None or tbest is None for ts, tbest, _, _ in scored):
                continue
            for ts, tbest, tmu, tsigma in scored:
                feats += [(ts - tmu[k]) / tsigma[k], (ts - tbest) / tsigma[k]]
            if other:
                feats.append(np.log(o_rank.get((q, p), o_depth)))
            pos_rows.append(feats)
            pos_q.append(q)
    width = len(names)
    cand = np.asarray(rows, dtype=np.float64).reshape(-1, width)
    cand = np.where(np.isnan(cand), 0.0, cand)  # a query whose positives have no score: no margin signal
    return Features(names, cand, row_q, row_d, np.asarray(row_rank, dtype=np.int32), np.asarray(row_dup, dtype=bool),
                    np.asarray(pos_rows, dtype=np.float64).reshape(-1, width), pos_q, list_size)
