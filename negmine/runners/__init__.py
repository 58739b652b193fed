"""Stage runners: each reads a run's tables, calls one library function, writes its outputs and records them.

The CLI commands, ``negmine mine`` (a built-in recipe, negmine.recipes) and the Python API
(negmine.api) all call these; their parameters' defaults are the only defaults there are.
"""

from negmine.runners.base import SOURCES, StageResult, table_path
from negmine.runners.bm25 import bm25_stage
from negmine.runners.cluster import cluster_stage
from negmine.runners.dense import dense_stage, embed_stage
from negmine.runners.estimate_fn import estimate_fn_stage
from negmine.runners.export import export_stage
from negmine.runners.false_negatives import duplicates_stage, fn_scores_stage
from negmine.runners.hybrid import hybrid_stage
from negmine.runners.ingest import ingest_stage
from negmine.runners.rescore import rescore_stage
from negmine.runners.retrieve import retrieve_stage
from negmine.runners.sample import sample_stage
from negmine.runners.train import compare_results, evaluate_model, train_stage

__all__ = [
    "SOURCES", "StageResult", "table_path", "bm25_stage", "cluster_stage", "compare_results", "dense_stage", "duplicates_stage", "embed_stage",
    "estimate_fn_stage", "evaluate_model", "export_stage", "fn_scores_stage", "hybrid_stage", "ingest_stage", "rescore_stage", "retrieve_stage",
    "sample_stage", "train_stage",
]
