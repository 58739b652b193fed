"""Fuse candidate lists of several retrievers into one hybrid pool.

Reciprocal Rank Fusion (Cormack, Clarke & Büttcher, SIGIR 2009):

    RRF(d) = Σ_{r ∈ retrievers that returned d} 1 / (k + rank_r(d)),   k = 60

Two fusions, both over the union of the documents the retrievers returned (nothing is cut, so two
top-100 lists fuse into at most 200 candidates per query):

- ``rrf``: ranked by RRF score, ties broken by doc id.
- ``union``: ranked by the best rank any retriever gave the document, min_r rank_r(d), ties broken
  by RRF score, then doc id. Rank 1 of every retriever comes first, then every rank 2, …; so each
  retriever's top documents stay near the top even where the other retriever missed them (under
  RRF a document found by both usually outranks one found by a single retriever).

The fused table keeps the candidates schema: ``rank`` is the fused position, ``score`` the RRF score
(for both fusions), and ``source`` records which retrievers returned the document (``"bm25"``,
``"dense"`` or ``"bm25+dense"``, sources sorted and joined by ``+``). The negatives table has no
source column: join it with ``candidates_hybrid`` on (query_id, neg_id = doc_id) to get it.
"""

from __future__ import annotations

from typing import Callable

import pyarrow as pa

from negmine.schemas import CANDIDATES, POSITIVE_SCORES

# per query, per doc: (RRF score, best rank, retrievers that returned it)
_Fused = dict[str, dict[str, tuple[float, int, frozenset[str]]]]


def _accumulate(candidates: list[pa.Table], k: int) -> _Fused:
    fused: _Fused = {}
    for table in candidates:
        for qid, did, source, rank in zip(*(table.column(c).to_pylist() for c in ("query_id", "doc_id", "source", "rank"))):
            score, best, sources = fused.setdefault(qid, {}).get(did, (0.0, rank, frozenset()))
            fused[qid][did] = (score + 1.0 / (k + rank), min(best, rank), sources | {source})
    return fused


def _ranked_table(fused: _Fused, order: Callable[[tuple[str, tuple[float, int, frozenset[str]]]], tuple]) -> pa.Table:
    cols: dict[str, list] = {n: [] for n in CANDIDATES.names}
    for qid in sorted(fused):
        for rank, (did, (score, _, sources)) in enumerate(sorted(fused[qid].items(), key=order), start=1):
            cols["query_id"].append(qid)
            cols["doc_id"].append(did)
            cols["source"].append("+".join(sorted(sources)))
            cols["rank"].append(rank)
            cols["score"].append(score)
    return pa.table(cols, schema=CANDIDATES)


def rrf_fuse(candidates: list[pa.Table], k: int = 60) -> pa.Table:
    """One candidates table: the union of ``candidates`` (each one retriever's), ranked by RRF score."""
    return _ranked_table(_accumulate(candidates, k), lambda item: (-item[1][0], item[0]))


def union_fuse(candidates: list[pa.Table], k: int = 60) -> pa.Table:
    """One candidates table: the union of ``candidates``, ranked by best rank, then RRF score, then doc id."""
    return _ranked_table(_accumulate(candidates, k), lambda item: (item[1][1], -item[1][0], item[0]))


FUSIONS: dict[str, Callable[..., pa.Table]] = {"rrf": rrf_fuse, "union": union_fuse}


def fuse_positive_scores(positive_scores: list[pa.Table], fused: pa.Table, k: int = 60) -> pa.Table:
    """s(q, d+) in the hybrid pool, for every labelled positive of ``positive_scores`` (one table per retriever).

    ``score`` is the positive's RRF score over the retrievers that retrieved it (those whose
    positive-scores row has a rank), Σ 1 / (k + rank_r(d+)), and 0 when none did, so it is on the same
    scale as the fused candidates' scores. ``rank`` is the positive's rank in ``fused``, null when it is
    not there. ``source`` names the retrievers that retrieved it as in the candidates (``""`` when none did).
    Rows keep the order of the first table; pairs only a later table has follow in its order.
    """
    by_pair: dict[tuple[str, str], tuple[float, set[str]]] = {}
    for table in positive_scores:
        for qid, did, source, rank in zip(*(table.column(c).to_pylist() for c in ("query_id", "doc_id", "source", "rank"))):
            score, sources = by_pair.get((qid, did), (0.0, set()))
            if rank is not None:
                score, sources = score + 1.0 / (k + rank), sources | {source}
            by_pair[(qid, did)] = (score, sources)
    fused_rank = dict(zip(zip(fused.column("query_id").to_pylist(), fused.column("doc_id").to_pylist()), fused.column("rank").to_pylist()))
    pairs = list(by_pair)
    return pa.table(
        {
            "query_id": [q for q, _ in pairs],
            "doc_id": [d for _, d in pairs],
            "source": ["+".join(sorted(by_pair[p][1])) for p in pairs],
            "rank": pa.array([fused_rank.get(p) for p in pairs], pa.int32()),
            "score": pa.array([by_pair[p][0] for p in pairs], pa.float32()),
        },
        schema=POSITIVE_SCORES,
    )
