"""``negmine hybrid``: the bm25 and dense pools fused."""

from __future__ import annotations

from negmine.io import read_table, write_table
from negmine.rundir import Run
from negmine.runners.base import (
    StageResult,
    retrieval_stats,
    run_stage,
    table_paths,
)
from negmine.schemas import CANDIDATES, POSITIVE_SCORES


def hybrid_stage(run: Run, fusion: str = "rrf", k: int = 60, force: bool = False) -> StageResult:
    """Fuse the bm25 and dense pools (negmine.retrieve.fusion) → candidates_hybrid, positive_scores_hybrid.

    Candidates: every document either retriever returned, ``source`` naming which did, ``score`` the
    RRF score Σ 1/(k + rank) (Cormack et al., SIGIR 2009), ``rank`` the fused order (``rrf``: by RRF
    score; ``union``: by best rank, then RRF). Positives: the same RRF score over the retrievers that
    retrieved the positive, 0 when none did; rank null when it is not in the fused list.
    """
    from negmine.errors import BadInputError, StageError
    from negmine.retrieve.fusion import FUSIONS, fuse_positive_scores

    if fusion not in FUSIONS:
        raise BadInputError("--fusion", f"unknown value {fusion!r}; choose from {sorted(FUSIONS)}")
    retrievers = ("bm25", "dense")
    inputs = [p for r in retrievers for p in table_paths(run, f"candidates_{r}", f"positive_scores_{r}")]
    for retriever, path in zip(("bm25", "bm25", "dense", "dense"), inputs):
        if not path.exists():
            raise StageError(f"{path}: missing; the hybrid pool fuses bm25 and dense, run `negmine {retriever} --run {run.path}` first")
    outputs = table_paths(run, "candidates_hybrid", "positive_scores_hybrid")
    config = {"fusion": fusion, "k": k}

    def compute():
        candidates = [read_table(p, CANDIDATES, "candidates") for p in inputs[0::2]]
        positives = [read_table(p, POSITIVE_SCORES, "positive_scores") for p in inputs[1::2]]
        fused = FUSIONS[fusion](candidates, k)
        fused_positives = fuse_positive_scores(positives, fused, k)
        write_table(fused, outputs[0], CANDIDATES)
        write_table(fused_positives, outputs[1], POSITIVE_SCORES)
        sources = fused.column("source").to_pylist()
        return {"fusion": fusion, **retrieval_stats(fused, fused_positives), "candidates_by_source": {s: sources.count(s) for s in sorted(set(sources))}}

    return run_stage(run, "hybrid", config, inputs, outputs, compute, force)
