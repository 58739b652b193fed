"""A drop-in for sentence-transformers' ``mine_hard_negatives``, run through negmine's stages.

    from negmine.compat import mine_hard_negatives   # instead of: from sentence_transformers.util import ...

:func:`mine_hard_negatives` takes the parameters of
``sentence_transformers.util.mine_hard_negatives`` (sentence-transformers 5 and 6,
``sentence_transformers/util/hard_negatives.py``) and returns the same ``datasets.Dataset`` layouts:
``triplet``, ``n-tuple``, ``labeled-pair``, ``labeled-list``, with or without scores. The work is done by
negmine's stages in a run directory (``run_dir``; by default a temporary one, removed afterwards): the
pair dataset is ingested (negmine.ingest.pairs), the corpus and queries are encoded and searched (the
dense stage), an optional cross-encoder rescores the candidates (the rescore stage), text duplicates of
the positives are kept out (the duplicates stage), and the negatives are picked by the rules below
(the ``compat`` stage). Every stage is cached in the run directory: a second call with a named
``run_dir`` and the same inputs reruns only what changed, and an interrupted call resumes.

Where it differs from sentence-transformers:

- The encoder runs in float32 by default (``precision``), as sentence-transformers does; ``"auto"``
  picks bfloat16 where the CPU computes it natively, faster, with slightly different scores.
- Documents whose text duplicates a positive of any query are never negatives (``dedup=True``).
- Prompts default to the model's own query and document prompts where its config declares them, as
  sentence-transformers' ``encode_query`` / ``encode_document`` do.
- ``random`` sampling is seeded (``seed``): the same call gives the same dataset.
- ``relative_margin`` keeps a negative scored at most ``s⁺ − |s⁺| · relative_margin``, right for
  negative positive scores too; ranks are counted among candidates that are not positives, so an
  anchor with several positives gets its full window; a ``range_max`` beyond the corpus is the
  corpus; ``num_negatives`` larger than the window is an error before any work.
- ``use_faiss``, ``faiss_batch_size`` and ``use_multi_process`` have no effect (negmine searches
  with faiss, in this process); ``cache_folder``, when ``run_dir`` is not given, is the run directory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from negmine.schemas import NEGATIVES_COMPAT

logger = logging.getLogger(__name__)

OUTPUT_FORMATS = ("triplet", "n-tuple", "labeled-pair", "labeled-list")
SAMPLING_STRATEGIES = ("top", "random")

def mine_hard_negatives(
    dataset,
    model,
    anchor_column_name: str | None = None,
    positive_column_name: str | None = None,
    corpus: list[str] | None = None,
    cross_encoder=None,
    range_min: int = 0,
    range_max: int | None = None,
    max_score: float | None = None,
    min_score: float | None = None,
    absolute_margin: float | None = None,
    relative_margin: float | None = None,
    num_negatives: int = 3,
    sampling_strategy: str = "top",
    query_prompt_name: str | None = None,
    query_prompt: str | None = None,
    corpus_prompt_name: str | None = None,
    corpus_prompt: str | None = None,
    include_positives: bool = False,
    output_format: str = "triplet",
    output_scores: bool = False,
    batch_size: int = 32,
    faiss_batch_size: int = 16384,
    use_faiss: bool = False,
    use_multi_process: list[str] | bool = False,
    verbose: bool = True,
    cache_folder: str | None = None,
    as_triplets: bool | None = None,
    margin: float | None = None,
    *,
    run_dir: str | os.PathLike | None = None,
    seed: int = 42,
    precision: str = "float32",
    dedup: bool = True,
    force: bool = False,
):
    """Add hard negatives to a dataset of (anchor, positive) pairs; mirrors
    ``sentence_transformers.util.mine_hard_negatives`` (see its documentation for every shared parameter).

    ``model``: a model name or folder, or a loaded ``SentenceTransformer``: encoded from the folder it
    was loaded from (save a model changed in memory since, and pass its folder), else saved into the
    run directory first. ``cross_encoder``: a name or folder
    (or ``"cross-encoder:PATH"``), or a loaded ``CrossEncoder`` (by the folder it was loaded from);
    its probabilities order the candidates and are the scores, as ``CrossEncoder.predict`` gives them.

    As sentence-transformers: a repeated anchor is one query with several positives; the corpus is the
    positives plus ``corpus``; candidates failing ``max_score``, ``min_score`` or a margin against the
    query's lowest positive score are dropped, ranks ``range_min`` to ``range_max`` of the rest are the
    window, and ``sampling_strategy`` takes its best (``top``) or a sample (``random``) of
    ``num_negatives``. By default (``range_max=None``) the window is ``range_min + num_negatives`` plus
    the most positives of any anchor, or ``10 * num_negatives`` with score filters.

    negmine's own keywords: ``run_dir`` (the run directory, kept; default a temporary one),
    ``seed`` (of ``random``), ``precision`` of the encoder (float32; "auto" for bfloat16 where the
    CPU computes it natively), ``dedup`` (keep text duplicates of positives out), ``force`` (rerun
    every stage). Returns a ``datasets.Dataset``.
    """
    from datasets import Dataset

    if len(dataset) == 0:
        raise ValueError("The dataset is empty. Please provide a non-empty dataset.")
    columns = list(dataset.column_names)
    if not anchor_column_name or anchor_column_name not in columns:
        anchor_column_name = columns[0]
    if not positive_column_name or positive_column_name not in columns:
        if len(columns) < 2:
            raise ValueError("Dataset must contain at least two columns to select the positive column automatically.")
        positive_column_name = columns[1]
    if as_triplets is not None:
        output_format = "triplet" if as_triplets else "n-tuple"
    if margin is not None:
        absolute_margin = margin
    if output_format == "n-tuple-scores":
        output_format, output_scores = "n-tuple", True
    if include_positives and output_format != "n-tuple":
        logger.warning('include_positives=True: output_format is "n-tuple", so that the ranking order is kept')
        output_format = "n-tuple"
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"Invalid output_format: {output_format}. Must be one of {', '.join(map(repr, OUTPUT_FORMATS))}.")
    if sampling_strategy not in SAMPLING_STRATEGIES:
        raise ValueError(f"Invalid sampling_strategy: {sampling_strategy}. Must be 'top' or 'random'.")
    if num_negatives < 1:
        raise ValueError(f"num_negatives must be at least 1, got num_negatives={num_negatives}.")
    if range_min < 0:
        raise ValueError(f"range_min must be non-negative, got range_min={range_min}.")
    pairs = set(zip(dataset[anchor_column_name], dataset[positive_column_name]))
    max_positives = max(Counter(anchor for anchor, _ in pairs).values())
    filtered = any(v is not None for v in (absolute_margin, relative_margin, max_score)) or (cross_encoder is not None and min_score is not None)
    if range_max is None:
        range_max = range_min + num_negatives * (10 if filtered else 1) + max_positives
    if range_min >= range_max:
        raise ValueError(f"range_min must be smaller than range_max, got range_min={range_min} and range_max={range_max}.")
    if num_negatives > range_max - range_min:
        raise ValueError(
            f"Cannot mine {num_negatives} negatives per query: only {range_max - range_min} candidates remain after skipping the "
            f"first range_min={range_min} of range_max={range_max}. Decrease num_negatives or range_min, or increase range_max.")

    rules = {"range_min": range_min, "range_max": range_max, "max_score": max_score, "min_score": min_score, "absolute_margin": absolute_margin,
             "relative_margin": relative_margin, "num_negatives": num_negatives, "sampling_strategy": sampling_strategy,
             "include_positives": include_positives, "seed": seed}
    prompts = {"query_prompt": query_prompt, "query_prompt_name": query_prompt_name, "corpus_prompt": corpus_prompt, "corpus_prompt_name": corpus_prompt_name}
    if run_dir is None and cache_folder is not None:
        run_dir = cache_folder
    with tempfile.TemporaryDirectory(prefix="negmine-compat-") if run_dir is None else contextlib.nullcontext(run_dir) as path:
        tables = _mine(dataset, model, anchor_column_name, positive_column_name, corpus, cross_encoder, rules, prompts, batch_size, precision,
                       dedup and not include_positives, Path(path), max_positives, force, verbose)
    data = layout(tables, anchor_column_name, positive_column_name, output_format, output_scores, num_negatives)
    return Dataset.from_dict(data)


def model_path(model: Any, run_dir: Path) -> str:
    """The name or folder negmine loads ``model`` from: itself for a name or path; for a loaded
    ``SentenceTransformer`` the folder it was loaded from, or else ``run_dir/models/compat-<sha>``, where it is saved."""
    if isinstance(model, (str, os.PathLike)):
        return str(model)
    loaded_from = _loaded_from(model)
    if loaded_from is not None:
        return loaded_from
    from negmine.rundir import hash_paths

    staging = Path(tempfile.mkdtemp(prefix=".model-", dir=run_dir))
    model.save(str(staging))
    digest = hash_paths([staging])[str(staging.resolve())][:16]
    target = run_dir / "models" / f"compat-{digest}"
    if target.exists():
        shutil.rmtree(staging)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(target)
    return str(target)


def _loaded_from(model: Any) -> str | None:
    """The local folder a loaded sentence-transformers model (or CrossEncoder) was read from, None if unknown."""
    for path in ("0.auto_model.config", "model.config", "config"):
        try:
            obj = model
            for part in path.split("."):
                obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
            name = obj._name_or_path
        except (AttributeError, IndexError, KeyError, TypeError):
            continue
        if name and Path(name).is_dir():
            return str(name)
    return None


def _mine(dataset, model, anchor_column, positive_column, corpus, cross_encoder, rules, prompts, batch_size, precision, dedup, path: Path,
          max_positives, force, verbose) -> dict:
    """Run the stages in the run directory at ``path``; the tables :func:`layout` reads."""
    from negmine.io import read_table
    from negmine.rundir import Run
    from negmine.runners import duplicates_stage, ingest_stage, rescore_stage, retrieve_stage
    from negmine.runners.base import table_path
    from negmine.schemas import CORPUS, DUPLICATES, QRELS, QUERIES

    run = Run.open(path)
    with run.lock():
        model_name = model_path(model, run.path)
        teacher = None
        if cross_encoder is not None:
            name = cross_encoder if isinstance(cross_encoder, (str, os.PathLike)) else _loaded_from(cross_encoder)
            if name is None:
                raise ValueError("cross_encoder: pass a name or folder, or a CrossEncoder loaded from a folder")
            teacher = str(name) if str(name).startswith(("cross-encoder:", "bi-encoder:")) else f"cross-encoder:{name}"
        say = print if verbose else (lambda *_: None)
        extra = None if corpus is None else [str(text) for text in corpus]
        ingest_stage(run, dataset, "pairs", query_column=anchor_column, positive_column=positive_column, corpus=extra, force=force)
        n_corpus = read_table(table_path(run, "corpus"), pa.schema([CORPUS.field("doc_id")])).num_rows
        n_duplicates = 0
        if dedup:
            duplicates_stage(run, force=force)
            n_duplicates = len(set(read_table(table_path(run, "duplicates"), DUPLICATES).column("doc_id").to_pylist()))
        # enough candidates for the window once positives, the query's own text and duplicates are left out
        k = min(rules["range_max"] + max_positives + 1 + n_duplicates, n_corpus)
        say(f"Mining with negmine in {run.path}: {n_corpus} documents, {k} candidates per query")
        retrieve_stage(run, "dense", k=k, model=model_name, max_seq_length=None, dtype="float32", batch_size=batch_size, precision=precision,
                       force=force, **prompts)
        if teacher is not None:
            rescore_stage(run, teacher, batch_size=batch_size, force=force)
        result = compat_stage(run, rules, dedup, teacher is not None, force)
        if verbose:
            stats = result.entry.get("stats", {})
            say("negmine compat stage" + (" (up to date, skipped)" if result.skipped else "") + f": {stats}")
        return {
            "queries": read_table(table_path(run, "queries"), QUERIES),
            "qrels": read_table(table_path(run, "qrels"), QRELS),
            "corpus": read_table(table_path(run, "corpus"), CORPUS),
            "positive_scores": _positive_scores(run, teacher is not None),
            "negatives": read_table(table_path(run, "negatives_compat"), NEGATIVES_COMPAT),
        }


def _positive_scores(run, teacher: bool) -> dict[tuple[str, str], float]:
    from negmine.io import read_table
    from negmine.runners.base import table_path
    from negmine.schemas import POSITIVE_SCORES, SCORED_POSITIVES

    if teacher:
        table = read_table(table_path(run, "scored_positives_dense"), SCORED_POSITIVES)
        return dict(zip(zip(table.column("query_id").to_pylist(), table.column("doc_id").to_pylist()), table.column("ce_prob").to_pylist()))
    table = read_table(table_path(run, "positive_scores_dense"), POSITIVE_SCORES)
    return dict(zip(zip(table.column("query_id").to_pylist(), table.column("doc_id").to_pylist()), table.column("score").to_pylist()))


def compat_stage(run, rules: dict, dedup: bool, teacher: bool, force: bool = False):
    """The negatives of sentence-transformers' rules (:func:`select_negatives`) per query → negatives_compat.parquet."""
    from negmine.io import read_table, write_table
    from negmine.runners.base import run_stage, table_paths
    from negmine.sample import likely_false_negatives
    from negmine.sample.pool import rng_for
    from negmine.schemas import CANDIDATES, CORPUS, DUPLICATES, QRELS, QUERIES, SCORED_CANDIDATES

    names = ["candidates_dense", "qrels", "queries", "corpus"] + (["duplicates"] if dedup else []) + (["scored_candidates_dense"] if teacher else [])
    inputs = table_paths(run, *names)
    outputs = table_paths(run, "negatives_compat")
    config = {**rules, "dedup": dedup, "scores": "teacher" if teacher else "retriever"}

    def compute():
        schemas = {"candidates_dense": CANDIDATES, "qrels": QRELS, "queries": QUERIES, "corpus": CORPUS, "duplicates": DUPLICATES,
                   "scored_candidates_dense": SCORED_CANDIDATES}
        tables = {name: read_table(path, schemas[name], name) for name, path in zip(names, inputs)}
        positives: dict[str, list[str]] = {}
        for q, d in zip(tables["qrels"].column("query_id").to_pylist(), tables["qrels"].column("doc_id").to_pylist()):
            positives.setdefault(q, []).append(d)
        pos_scores = _positive_scores(run, teacher)
        exclusions = likely_false_negatives(tables["qrels"], tables.get("duplicates"))
        query_text = dict(zip(*(tables["queries"].column(c).to_pylist() for c in ("query_id", "text"))))
        doc_text = dict(zip(*(tables["corpus"].column(c).to_pylist() for c in ("doc_id", "text"))))
        candidates = tables["scored_candidates_dense"] if teacher else tables["candidates_dense"]
        score_column = "ce_prob" if teacher else "score"
        pools: dict[str, tuple[list, list, set]] = {}
        candidates = candidates.sort_by([("query_id", "ascending"), ("rank", "ascending")])
        for q, d, s in zip(*(candidates.column(c).to_pylist() for c in ("query_id", "doc_id", score_column))):
            ids, scores, seen = pools.setdefault(q, ([], [], set()))
            if d not in seen:
                seen.add(d)
                ids.append(d)
                scores.append(s)
        out = {"query_id": [], "neg_id": [], "neg_rank": [], "score": []}
        counts: Counter = Counter()
        for qid in tables["queries"].column("query_id").to_pylist():
            if qid not in positives:
                continue
            ids, scores, _ = pools.get(qid, ([], [], set()))
            keep = [i for i, d in enumerate(ids) if (rules["include_positives"] or d not in positives[qid]) and exclusions.reason(qid, d) is None
                    and not (doc_text[d] == query_text[qid] and not (rules["include_positives"] and d in positives[qid]))]
            order = np.asarray(keep, dtype=np.int64)
            if teacher:  # the teacher's scores order the candidates, as sentence-transformers' rescoring does
                order = order[np.argsort(-np.asarray(scores, dtype=np.float64)[order], kind="stable")]
            floor = min(float(pos_scores[(qid, p)]) for p in positives[qid])
            chosen, skipped = select_negatives(np.asarray(scores, dtype=np.float64)[order], floor, rules, rng_for(rules["seed"], qid))
            counts.update(skipped)
            counts["queries_short"] += len(chosen) < rules["num_negatives"]
            for rank, i in enumerate(chosen, start=1):
                out["query_id"].append(qid)
                out["neg_id"].append(ids[order[i]])
                out["neg_rank"].append(rank)
                out["score"].append(scores[order[i]])
        table = pa.table(out, schema=NEGATIVES_COMPAT)
        write_table(table, outputs[0], NEGATIVES_COMPAT)
        return {"queries": len(positives), "negatives": table.num_rows, **{f"skipped_{k}" if k != "queries_short" else k: v for k, v in counts.items()}}

    return run_stage(run, "compat", config, inputs, outputs, compute, force)


def select_negatives(scores: np.ndarray, positive_score: float, rules: dict, rng: np.random.Generator) -> tuple[list[int], Counter]:
    """Indices into ``scores`` (one query's candidates, best first) of its negatives, best first, and how
    many candidates each filter dropped; sentence-transformers' selection.

    ``positive_score`` is the query's lowest positive score (with several positives, the hardest). A
    candidate is dropped when ``score > positive_score - absolute_margin``, when
    ``score > positive_score - |positive_score| * relative_margin``, when ``score > max_score`` or
    ``score < min_score``. The window is places ``range_min`` to ``range_max`` of the rest; ``top``
    takes its first ``num_negatives``, ``random`` a uniform sample of them, ordered by score.
    """
    keep = np.ones(len(scores), dtype=bool)
    skipped: Counter = Counter()
    tests = {
        "absolute_margin": lambda m: scores > positive_score - m,
        "relative_margin": lambda m: scores > positive_score - abs(positive_score) * m,
        "max_score": lambda m: scores > m,
        "min_score": lambda m: scores < m,
    }
    for name, drops in tests.items():
        if rules.get(name) is not None:
            dropped = keep & drops(rules[name])
            skipped[name] += int(dropped.sum())
            keep &= ~dropped
    window = np.flatnonzero(keep)[: rules["range_max"]][rules["range_min"]:]
    n = rules["num_negatives"]
    if rules["sampling_strategy"] == "random" and len(window) > n:
        window = np.sort(rng.choice(window, size=n, replace=False))  # candidates are best first: sorted indices are sorted scores
    return [int(i) for i in window[:n]], skipped


def layout(tables: dict, anchor_column: str, positive_column: str, output_format: str, output_scores: bool, num_negatives: int) -> dict[str, list]:
    """The columns of sentence-transformers' ``output_format`` (with ``scores``/``score`` for ``output_scores``),
    one row per (anchor, positive) (per anchor for labeled-pair), in order of first appearance."""
    query_text = dict(zip(*(tables["queries"].column(c).to_pylist() for c in ("query_id", "text"))))
    doc_text = dict(zip(*(tables["corpus"].column(c).to_pylist() for c in ("doc_id", "text"))))
    positives: dict[str, list[str]] = {}
    for q, d in zip(tables["qrels"].column("query_id").to_pylist(), tables["qrels"].column("doc_id").to_pylist()):
        positives.setdefault(q, []).append(d)
    negatives: dict[str, list[tuple[str, float]]] = {}
    negs = tables["negatives"]
    for q, d, s in zip(*(negs.column(c).to_pylist() for c in ("query_id", "neg_id", "score"))):
        negatives.setdefault(q, []).append((d, s))
    pos_score = tables["positive_scores"]
    header = {"triplet": ["negative"], "n-tuple": [f"negative_{i}" for i in range(1, num_negatives + 1)],
              "labeled-pair": ["score" if output_scores else "label"], "labeled-list": ["scores" if output_scores else "labels"]}[output_format]
    header = [anchor_column, positive_column, *header] + (["scores"] if output_scores and output_format in ("triplet", "n-tuple") else [])
    rows: list[tuple] = []
    for qid in tables["queries"].column("query_id").to_pylist():
        if qid not in positives:
            continue
        anchor, negs = query_text[qid], negatives.get(qid, [])
        if output_format == "labeled-pair":
            rows += [(anchor, doc_text[d], pos_score[(qid, d)] if output_scores else 1) for d in positives[qid]]
            rows += [(anchor, doc_text[d], s if output_scores else 0) for d, s in negs]
            continue
        for pid in positives[qid]:
            positive, s_pos = doc_text[pid], pos_score[(qid, pid)]
            if output_format == "triplet":
                rows += [(anchor, positive, doc_text[d]) + (([s_pos, s],) if output_scores else ()) for d, s in negs]
            elif output_format == "n-tuple" and len(negs) == num_negatives:  # as sentence-transformers: complete rows only
                rows.append((anchor, positive, *(doc_text[d] for d, _ in negs)) + (([s_pos] + [s for _, s in negs],) if output_scores else ()))
            elif output_format == "labeled-list" and negs:
                labels = [s_pos] + [s for _, s in negs] if output_scores else [1] + [0] * len(negs)
                rows.append((anchor, [positive] + [doc_text[d] for d, _ in negs], labels))
    return {name: [row[i] for row in rows] for i, name in enumerate(header)}
