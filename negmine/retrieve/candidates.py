"""Helpers shared by the retrieval stages: building the candidates table and scoring positives."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pyarrow as pa

from negmine.schemas import CANDIDATES, POSITIVE_SCORES


def candidates_table(query_ids: Sequence[str], hits: Sequence[Sequence[tuple[str, float]]], source: str) -> pa.Table:
    """One row per (query, hit) in rank order; ``hits[i]`` are query i's (doc_id, score), best first."""
    qids, dids, ranks, scores = [], [], [], []
    for qid, row in zip(query_ids, hits):
        for rank, (did, score) in enumerate(row, start=1):
            qids.append(qid)
            dids.append(did)
            ranks.append(rank)
            scores.append(score)
    return pa.table(
        {
            "query_id": qids,
            "doc_id": dids,
            "source": [source] * len(qids),
            "rank": np.asarray(ranks, dtype=np.int32),
            "score": np.asarray(scores, dtype=np.float32),
        },
        schema=CANDIDATES,
    )


def positive_pairs(qrels: pa.Table, query_ids: Sequence[str]) -> list[tuple[str, str]]:
    """(query_id, doc_id) of every labelled positive (relevance > 0), in query order then qrels order."""
    wanted = set(query_ids)
    by_query: dict[str, list[str]] = {}
    for qid, did, rel in zip(*(qrels.column(c).to_pylist() for c in ("query_id", "doc_id", "relevance"))):
        if rel > 0 and qid in wanted:
            by_query.setdefault(qid, []).append(did)
    return [(qid, did) for qid in query_ids for did in by_query.get(qid, [])]


def positive_scores_table(
    candidates: pa.Table,
    qrels: pa.Table,
    query_ids: Sequence[str],
    source: str,
    score_missing: Callable[[list[tuple[str, str]]], Sequence[float]],
) -> pa.Table:
    """s(q, d+) for every labelled positive: from the candidates where retrieval found it,
    otherwise from ``score_missing`` (the retriever scoring the pair directly); rank is null then."""
    found = {
        (q, d): (r, s)
        for q, d, r, s in zip(*(candidates.column(c).to_pylist() for c in ("query_id", "doc_id", "rank", "score")))
    }
    pairs = positive_pairs(qrels, query_ids)
    missing = [p for p in pairs if p not in found]
    missing_scores = dict(zip(missing, score_missing(missing))) if missing else {}
    ranks = [found[p][0] if p in found else None for p in pairs]
    scores = [found[p][1] if p in found else float(missing_scores[p]) for p in pairs]
    return pa.table(
        {
            "query_id": [p[0] for p in pairs],
            "doc_id": [p[1] for p in pairs],
            "source": [source] * len(pairs),
            "rank": pa.array(ranks, type=pa.int32()),
            "score": np.asarray(scores, dtype=np.float32),
        },
        schema=POSITIVE_SCORES,
    )


def doc_texts(corpus: pa.Table) -> list[str]:
    """Title and text joined, the way BEIR's retrievers see a document."""
    titles = corpus.column("title").to_pylist()
    texts = corpus.column("text").to_pylist()
    return [f"{t} {x}".strip() if t else x for t, x in zip(titles, texts)]
