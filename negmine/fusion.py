"""Fuse candidate lists of several retrievers into one hybrid pool.

Reciprocal Rank Fusion (Cormack, Clarke & Büttcher, SIGIR 2009):

    RRF(d) = Σ_{r ∈ retrievers that returned d} 1 / (k + rank_r(d)),   k = 60

The fused table keeps the candidates schema: ``rank`` is the position by RRF score (ties broken by
doc id), ``score`` the RRF score, and ``source`` records which retrievers returned the document
(``"bm25"``, ``"dense"`` or ``"bm25+dense"``, sources sorted and joined by ``+``). The negatives table
has no source column: join it with ``candidates_hybrid`` on (query_id, neg_id = doc_id) to get it.
"""

from __future__ import annotations

import pyarrow as pa

from negmine.schemas import CANDIDATES


def rrf_fuse(candidates: list[pa.Table], k: int = 60) -> pa.Table:
    """One candidates table: the union of ``candidates`` (each one retriever's), ranked by RRF score."""
    fused: dict[str, dict[str, tuple[float, set[str]]]] = {}
    for table in candidates:
        for qid, did, source, rank in zip(*(table.column(c).to_pylist() for c in ("query_id", "doc_id", "source", "rank"))):
            score, sources = fused.setdefault(qid, {}).get(did, (0.0, set()))
            fused[qid][did] = (score + 1.0 / (k + rank), sources | {source})
    cols: dict[str, list] = {n: [] for n in CANDIDATES.names}
    for qid in sorted(fused):
        ranked = sorted(fused[qid].items(), key=lambda item: (-item[1][0], item[0]))
        for rank, (did, (score, sources)) in enumerate(ranked, start=1):
            cols["query_id"].append(qid)
            cols["doc_id"].append(did)
            cols["source"].append("+".join(sorted(sources)))
            cols["rank"].append(rank)
            cols["score"].append(score)
    return pa.table(cols, schema=CANDIDATES)


FUSIONS = {"rrf": rrf_fuse}
