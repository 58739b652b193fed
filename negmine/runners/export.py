"""``negmine export`` and a recipe's ``export`` stage: read a run's tables (and, for ``scores``, its
retriever or teacher scores), build an export with negmine.export and write it to a file or stdout.

Scores (``scores``):

- ``retriever`` — the scores of the retrieval the negatives were sampled from: ``retriever_score`` and
  ``pos_retriever_score`` of the negatives table, and for labelled positives without a negative of their
  own, ``positive_scores_<source>.parquet``.
- ``teacher`` — the scores of ``negmine rescore``: ``ce_score`` of ``scored_candidates_<source>.parquet``
  and ``scored_positives_<source>.parquet`` (a cross-encoder's logit, or a bi-encoder teacher's cosine).

``<source>`` is the candidate pool the negatives were sampled from (``dense``, ``bm25``, ``hybrid``), as the
run's manifest records it; ``source`` names it where the manifest does not. Scores are float32 in the run
and written as the shortest decimal that reads back as the same float32.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pyarrow as pa

from negmine.errors import BadInputError
from negmine.names import check_name
from negmine.rundir import Run
from negmine.runners.base import StageResult

SCORE_SOURCES = ("retriever", "teacher")


def file_format(fmt: str, out: str | os.PathLike) -> str:
    """``parquet`` for a sentence-transformers export to ``*.parquet``; JSONL otherwise (and on stdout)."""
    if str(out) != "-" and Path(out).suffix == ".parquet":
        if fmt != "sentence-transformers":
            raise BadInputError(out, f"format {fmt!r} is JSONL only; name the file *.jsonl")
        return "parquet"
    return "jsonl"


def jsonl_lines(table: pa.Table):
    for row in table.to_pylist():
        yield json.dumps(row, ensure_ascii=False) + "\n"


def write_export(table: pa.Table, out: str | os.PathLike, kind: str) -> None:
    """Write atomically to ``out`` (Parquet or JSONL), or stream JSONL to stdout when ``out`` is ``-``.

    On stdout a closed pipe (``negmine export … --out - | head``) ends the export quietly.
    """
    if str(out) == "-":
        try:
            for line in jsonl_lines(table):
                sys.stdout.write(line)
            sys.stdout.flush()
        except BrokenPipeError:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush does not fail again
        return
    from negmine.io import atomic_path

    with atomic_path(out) as tmp:
        if kind == "parquet":
            import pyarrow.parquet as pq

            pq.write_table(table, tmp, compression="zstd")
        else:
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.writelines(jsonl_lines(table))


def corpus_path(out: str | os.PathLike) -> Path:
    """Where a Tevatron ``ids`` export writes its corpus: ``<stem>.corpus.jsonl`` beside ``out``."""
    out = Path(out)
    return out.with_name(f"{out.stem}.corpus.jsonl")


def sampled_source(run_dir: Path, strategy: str) -> str | None:
    """The candidate pool ``negatives_<strategy>`` was sampled from, as the run's manifest records it."""
    entry = Run.open(run_dir, create=False).manifest["stages"].get(f"sample.{strategy}")
    source = entry.get("config", {}).get("source") if isinstance(entry, dict) else None
    return source if isinstance(source, str) else None


def _shortest(values) -> list[float]:
    """float32 scores as the shortest decimals that read back as the same float32."""
    import numpy as np

    return [float(v) for v in np.asarray(values, dtype=np.float32).astype(str)]


def _wanted_pairs(negatives: pa.Table, qrels: pa.Table) -> pa.Table:
    """Every (query_id, doc_id) an export may score: the negatives, their positives and the labelled positives."""
    import pyarrow.compute as pc

    positives = qrels.filter(pc.greater(qrels.column("relevance"), 0))
    parts = [
        negatives.select(["query_id", "neg_id"]).rename_columns(["query_id", "doc_id"]),
        negatives.select(["query_id", "pos_id"]).rename_columns(["query_id", "doc_id"]),
        positives.select(["query_id", "doc_id"]),
    ]
    return pa.concat_tables(parts).group_by(["query_id", "doc_id"]).aggregate([])


def _scores_of(table: pa.Table, column: str, wanted: pa.Table) -> dict[tuple[str, str], float]:
    found = table.select(["query_id", "doc_id", column]).join(wanted, keys=["query_id", "doc_id"], join_type="inner")
    found = found.filter(found.column(column).is_valid())
    return dict(zip(zip(found.column("query_id").to_pylist(), found.column("doc_id").to_pylist()), _shortest(found.column(column).to_numpy(zero_copy_only=False))))


def load_scores(run_dir: Path, strategy: str, kind: str, negatives: pa.Table, qrels: pa.Table, source: str | None = None) -> tuple[dict, str | None]:
    """(query_id, doc_id) → score for ``kind`` (``retriever`` or ``teacher``), and the source it read."""
    from negmine.io import read_table

    if kind not in SCORE_SOURCES:
        raise BadInputError("--scores", f"unknown score source {kind!r}; choose from {list(SCORE_SOURCES)}")
    if source is not None:
        check_name(source, "--source")
    else:
        source = sampled_source(run_dir, strategy)
    wanted = _wanted_pairs(negatives, qrels)
    if kind == "retriever":
        from negmine.schemas import POSITIVE_SCORES

        scores = {}
        path = run_dir / f"positive_scores_{source}.parquet"
        if source is not None and path.exists():
            scores |= _scores_of(read_table(path, POSITIVE_SCORES, "positive_scores"), "score", wanted)
        neg = negatives.select(["query_id", "neg_id", "retriever_score"]).rename_columns(["query_id", "doc_id", "score"])
        pos = negatives.select(["query_id", "pos_id", "pos_retriever_score"]).rename_columns(["query_id", "doc_id", "score"])
        for part in (pos, neg):
            part = part.filter(part.column("score").is_valid())
            scores |= dict(zip(zip(part.column("query_id").to_pylist(), part.column("doc_id").to_pylist()), _shortest(part.column("score").to_numpy(zero_copy_only=False))))
        return scores, source
    from negmine.schemas import SCORED_CANDIDATES, SCORED_POSITIVES

    if source is None:
        raise BadInputError("--source", f"the run's manifest does not say which candidates negatives_{strategy} came from; name the teacher's --source (dense, bm25 or hybrid)")
    paths = [run_dir / f"scored_candidates_{source}.parquet", run_dir / f"scored_positives_{source}.parquet"]
    for path in paths:
        if not path.exists():
            raise BadInputError(path, f"missing: --scores teacher reads the teacher's scores of the {source} candidates; "
                                      f"make them with `negmine rescore --run {run_dir} --source {source} --teacher MODEL`")
    scores = _scores_of(read_table(paths[0], SCORED_CANDIDATES, "scored_candidates"), "ce_score", wanted)
    scores |= _scores_of(read_table(paths[1], SCORED_POSITIVES, "scored_positives"), "ce_score", wanted)
    return scores, source



def negatives_strategies(run_dir: str | os.PathLike) -> list[str]:
    """The strategies whose negatives the run holds (``negatives_<strategy>.parquet``), sorted."""
    return sorted(p.stem.removeprefix("negatives_") for p in Path(run_dir).glob("negatives_*.parquet"))


def only_strategy(run_dir: str | os.PathLike) -> str:
    """The strategy of the run's only negatives table; several or none is bad input naming ``--strategy``."""
    found = negatives_strategies(run_dir)
    if len(found) != 1:
        raise BadInputError("--strategy", f"{run_dir} holds {len(found)} negatives tables {found}; name one")
    return found[0]


def export_run(
    run_dir: str | os.PathLike, strategy: str | None, fmt: str, out: str | os.PathLike, layout: str | None = None, num_negatives: int | None = None,
    group_ids: bool | None = None, scores: str | None = None, source: str | None = None,
) -> dict:
    """Read the run's tables, build the ``fmt`` export of ``negatives_<strategy>`` and write it to ``out``.

    ``strategy`` None: the run's only negatives table (bad input when it has several or none).
    ``layout`` None: the format's first (sentence-transformers ``n-tuple``, tevatron ``passages``); a
    Tevatron ``ids`` export writes its corpus beside ``out`` (:func:`corpus_path`).

    ``group_ids``: None (the format's default), True or False; the positive groups take the run's
    ``duplicates.parquet`` in when it has one.

    ``scores``: None (no scores), ``retriever`` or ``teacher`` (module docstring); ``source`` the candidate
    pool whose scores to read, by default the one the negatives were sampled from.
    """
    from negmine.export import EXPORTERS, LAYOUTS
    from negmine.io import read_table
    from negmine.schemas import CORPUS, DUPLICATES, NEGATIVES, QRELS, QUERIES

    if fmt not in EXPORTERS:
        raise BadInputError("--format", f"unknown export format {fmt!r}; choose from {sorted(EXPORTERS)}")
    if layout is not None and layout not in LAYOUTS[fmt]:
        known = {f: list(ls) for f, ls in LAYOUTS.items() if ls}
        raise BadInputError("--layout", f"format {fmt!r} has no layout {layout!r}; the layouts are {known}")
    if num_negatives is not None and fmt != "sentence-transformers":
        raise BadInputError("--num-negatives", f"applies to --format sentence-transformers only, not {fmt!r}")
    if scores is not None and scores not in SCORE_SOURCES:
        raise BadInputError("--scores", f"unknown score source {scores!r}; choose from {list(SCORE_SOURCES)}")
    run_dir = Path(run_dir)
    found = negatives_strategies(run_dir)
    strategy = strategy if strategy is not None else only_strategy(run_dir)
    check_name(strategy, "--strategy")
    path = run_dir / f"negatives_{strategy}.parquet"
    if not path.exists():
        raise BadInputError(path, f"no negatives for strategy {strategy!r}; this run has {found}")
    kind = file_format(fmt, out)
    if layout == "ids" and str(out) == "-":
        raise BadInputError("--out", "Tevatron's ids layout writes a corpus file beside the training file; give --out a file, not '-'")
    tables = {
        "negatives": read_table(path, NEGATIVES, "negatives"),
        "queries": read_table(run_dir / "queries.parquet", QUERIES, "queries"),
        "corpus": read_table(run_dir / "corpus.parquet", CORPUS, "corpus"),
        "qrels": read_table(run_dir / "qrels.parquet", QRELS, "qrels"),
    }
    options = {"layout": layout or LAYOUTS[fmt][0]} if LAYOUTS[fmt] else {}
    if fmt == "sentence-transformers":
        options["num_negatives"] = num_negatives
    with_ids = group_ids if group_ids is not None else fmt != "sentence-transformers"
    duplicates_path = run_dir / "duplicates.parquet"
    if with_ids and duplicates_path.exists():
        options["duplicates"] = read_table(duplicates_path, DUPLICATES, "duplicates")
    extra = {}
    if scores is not None:
        options["scores"], read_from = load_scores(run_dir, strategy, scores, tables["negatives"], tables["qrels"], source)
        extra = {"scores": scores, "score_source": read_from}
    table, stats = EXPORTERS[fmt](**tables, **options, group_ids=with_ids)
    if options.get("layout") == "ids":
        from negmine.export import tevatron_corpus

        extra["corpus_out"] = str(corpus_path(out))
        write_export(tevatron_corpus(table, tables["corpus"]), extra["corpus_out"], "jsonl")
    write_export(table, out, kind)
    return {"format": fmt, "file_format": kind, "strategy": strategy, "out": str(out), "group_ids": with_ids, **stats, **extra}


def export_stage(run: Run, strategy: str | None = None, format: str = "sentence-transformers", out: str = "export.jsonl", layout: str | None = None,
                 num_negatives: int | None = None, group_ids: bool | None = None, scores: str | None = None, source: str | None = None,
                 force: bool = False) -> StageResult:
    """Write an export (negmine.export) of ``negatives_<strategy>`` to ``out``, relative to the run directory.

    ``layout`` None is the format's default layout; ``scores`` ``retriever`` or ``teacher`` adds the scores
    a distillation loss reads (module docstring), None leaves them out.
    """
    stats = export_run(run.path, strategy, format, run.path / out, layout, num_negatives, group_ids, scores, source)
    return StageResult(f"export.{format}", False, {"stats": stats})
