"""Stage — rescore candidates and labelled positives with a *teacher* (RocketQA, Qu et al., NAACL 2021).

The teacher scores every (query, candidate) pair of a candidates table and every (query, labelled
positive) of the matching positive-scores table. Two kinds of teacher:

``cross-encoder:NAME_OR_PATH`` (or a plain ``NAME_OR_PATH``)
    a sentence-transformers ``CrossEncoder`` with one output label (a reranker).
    ``ce_score`` = the raw logit z; ``ce_prob`` = σ(z) = 1 / (1 + e^(−z)), the probability the
    reranker was trained to output (MS MARCO rerankers are trained with a sigmoid/BCE head).

``bi-encoder:NAME_OR_PATH``
    a sentence-transformers bi-encoder used as teacher. ``ce_score`` = cos(E(q), E(d)) of the
    normalised embeddings ∈ [−1, 1]; ``ce_prob`` = (cos + 1) / 2 ∈ [0, 1]. This is a *linear
    rescale, not a calibrated probability*: a bi-encoder gives no probability of relevance, and
    typical MiniLM cosines of related texts lie in 0.3–0.8, i.e. ``ce_prob`` 0.65–0.9. Thresholds
    meant for a calibrated cross-encoder (denoise's 0.1 / 0.9) must be re-chosen for it.

Thresholds (``denoise``'s ``negative_below`` / ``positive_above``, ``estimate-fn --threshold``)
apply to ``ce_prob``; ``simans --param score=ce`` and ``estimate-fn``'s "negative above its positive"
compare ``ce_score``.

Outputs: ``scored_candidates_<source>`` = the candidates' columns + ``ce_score``, ``ce_prob``;
``scored_positives_<source>`` = the positive-scores columns + ``ce_score``, ``ce_prob``. Several
teachers are stored side by side: the first in ``ce_score``/``ce_prob``, each other one in
``ce_score_<label>``/``ce_prob_<label>`` (negmine.teachers).
Each distinct (query, document) pair is scored once; the output does not depend on batch size
beyond floating-point noise of padded batches.

The work is split into independent parts (:func:`plan_scores`): chunks of ``chunk_size`` pairs for
a cross-encoder, chunks of ``chunk_size`` distinct texts (queries, then documents) for a
bi-encoder. :func:`rescore` runs them in this process; ``negmine.engines.ray`` runs the same parts
on Ray actors with the same :meth:`Teacher.run_part` and combines them with the same function, so
both engines give the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa

from negmine.retrieve.candidates import doc_texts
from negmine.errors import BadInputError, StageError
from negmine.progress import track
from negmine.schemas import SCORED_CANDIDATES, SCORED_POSITIVES

TEACHER_KINDS = ("cross-encoder", "bi-encoder")


def parse_teacher(spec: str) -> tuple[str, str]:
    """``'cross-encoder:PATH'`` → ``('cross-encoder', 'PATH')``; a plain name or path is a cross-encoder."""
    spec = str(spec)
    kind, sep, name = spec.partition(":")
    if sep and kind in TEACHER_KINDS:
        if not name:
            raise BadInputError(spec, f"teacher {kind!r} needs a model name or path after the colon", field="teacher")
        return kind, name
    if sep and "/" not in kind and not Path(spec).exists():
        raise BadInputError(spec, f"unknown teacher kind {kind!r}; choose from {sorted(TEACHER_KINDS)}", field="teacher")
    return "cross-encoder", spec


@dataclass
class Teacher:
    """A loaded teacher: ``scores(pairs)`` gives raw scores, ``probs(scores)`` the [0, 1] scale."""

    kind: str
    name: str
    model: object

    def scores(self, queries: list[str], docs: list[str], batch_size: int = 32, chunk_size: int = 2048) -> np.ndarray:
        """Raw teacher scores of the pairs (queries[i], docs[i])."""
        parts, combine = plan_scores(self.kind, queries, docs, chunk_size)
        return combine(list(self.map_parts(parts, batch_size)))

    def map_parts(self, parts: list[tuple], batch_size: int = 32) -> Iterator[np.ndarray]:
        """:meth:`run_part` of each part, in order (``negmine.engines.ray.RayTeacher`` runs them on Ray actors)."""
        return (self.run_part(part, batch_size) for part in parts)

    def run_part(self, part: tuple, batch_size: int = 32) -> np.ndarray:
        """One part of :func:`plan_scores`: a cross-encoder's logits of a chunk of pairs, or a bi-encoder's
        normalised embeddings of a chunk of texts."""
        import torch

        what, *data = part
        if what == "pairs":
            queries, docs = data
            with torch.inference_mode():
                z = self.model.predict(
                    list(zip(queries, docs)), batch_size=batch_size, activation_fn=torch.nn.Identity(), show_progress_bar=False
                )
            return np.asarray(z, dtype=np.float32).reshape(len(queries))
        from negmine.retrieve.encode import encode

        return encode(self.model, data[0], batch_size)

    def probs(self, scores: np.ndarray) -> np.ndarray:
        return teacher_probs(scores, self.kind)


def plan_scores(kind: str, queries: list[str], docs: list[str], chunk_size: int = 2048) -> tuple[list[tuple], Callable[[list[np.ndarray]], np.ndarray]]:
    """Split the scoring of pairs (queries[i], docs[i]) into independent parts, and how to combine their results.

    cross-encoder: parts ``("pairs", queries, docs)`` of ``chunk_size`` pairs; results are logits, concatenated.
    bi-encoder: each distinct text is encoded once (a query has ~100 candidates, a document recurs across
    queries): parts ``("texts", texts)`` of ``chunk_size`` distinct queries, then of distinct documents;
    results are normalised embeddings, combined as cos(E(q), E(d)) = ⟨E(q), E(d)⟩.
    """
    from negmine.retrieve.encode import chunks

    if kind == "cross-encoder":
        parts = [("pairs", q, d) for q, d in zip(chunks(queries, chunk_size), chunks(docs, chunk_size))]
        return parts, lambda results: np.concatenate(results).astype(np.float32) if results else np.zeros(0, np.float32)
    if kind != "bi-encoder":
        raise StageError(f"unknown teacher kind {kind!r}; choose from {sorted(TEACHER_KINDS)}")
    if not queries:
        return [], lambda results: np.zeros(0, np.float32)
    uq, q_of = np.unique(np.asarray(queries, dtype=object), return_inverse=True)
    ud, d_of = np.unique(np.asarray(docs, dtype=object), return_inverse=True)
    query_parts, doc_parts = chunks(list(uq), chunk_size), chunks(list(ud), chunk_size)

    def combine(results: list[np.ndarray]) -> np.ndarray:
        q = np.concatenate(results[: len(query_parts)])
        d = np.concatenate(results[len(query_parts) :])
        return np.einsum("ij,ij->i", q[q_of], d[d_of]).astype(np.float32)

    return [("texts", t) for t in query_parts + doc_parts], combine


def teacher_probs(scores: np.ndarray, kind: str) -> np.ndarray:
    """σ(z) for a cross-encoder logit; (cos + 1) / 2 for a bi-encoder cosine (see module docstring)."""
    s = np.asarray(scores, dtype=np.float64)
    if kind == "cross-encoder":
        return (1.0 / (1.0 + np.exp(-s))).astype(np.float32)
    if kind == "bi-encoder":
        return np.clip((s + 1.0) / 2.0, 0.0, 1.0).astype(np.float32)
    raise StageError(f"unknown teacher kind {kind!r}; choose from {sorted(TEACHER_KINDS)}")


def check_teacher(spec: str) -> tuple[str, str]:
    """``(kind, name)`` of a teacher spec after the cheap checks (no model loaded): a missing local path,
    or a bi-encoder passed as a cross-encoder, is bad input."""
    kind, name = parse_teacher(spec)
    if kind == "bi-encoder":
        from negmine.retrieve.models import check_model

        check_model(name)
        return kind, name
    local = Path(name).expanduser()
    if not local.exists() and (name.startswith((".", "/", "~")) or name.count("/") > 1):
        raise BadInputError(name, "teacher model path does not exist", field="teacher")
    if local.is_dir() and not _is_sequence_classifier(local):
        raise BadInputError(
            name,
            "not a cross-encoder (config.json has no *ForSequenceClassification architecture); "
            f"to use a bi-encoder as teacher pass --teacher bi-encoder:{name}",
            field="teacher",
        )
    return kind, name


def check_teachers(teachers: str | list[str]) -> list:
    """The :class:`negmine.teachers.TeacherSpec` of each teacher of a list, after :func:`check_teacher` of each
    (a bad list or a bad teacher is bad input before any model loads)."""
    from negmine.teachers import parse_teachers

    specs = parse_teachers(teachers)
    for spec in specs:
        check_teacher(spec.spec)
    return specs


def load_teacher(spec: str, max_length: int | None = 512, device: str | None = None, precision: str = "float32") -> Teacher:
    """Load a teacher by spec (see :func:`parse_teacher`) with the real sentence-transformers loaders;
    a bi-encoder teacher runs in ``precision`` (negmine.retrieve.device.PRECISIONS), a cross-encoder in float32."""
    kind, name = check_teacher(spec)
    if kind == "bi-encoder":
        from negmine.retrieve.models import load_model

        return Teacher(kind, name, load_model(name, max_length, device, precision=precision))
    if precision != "float32":
        raise BadInputError("--teacher-precision", f"a cross-encoder teacher runs in float32; got {precision!r}", field="teacher_precision")
    try:
        from sentence_transformers import CrossEncoder
    except ImportError:
        raise StageError("the rescore stage needs sentence-transformers: pip install sentence-transformers") from None
    local = Path(name).expanduser()
    try:
        model = CrossEncoder(str(local) if local.exists() else name, max_length=max_length, device=device)
    except (OSError, ValueError) as exc:
        raise BadInputError(name, f"could not load a CrossEncoder ({exc})", field="teacher") from None
    if getattr(model.config, "num_labels", 1) != 1:
        raise BadInputError(name, f"cross-encoder has {model.config.num_labels} labels; the teacher needs a 1-label reranker", field="teacher")
    return Teacher(kind, name, model)


def _is_sequence_classifier(path: Path) -> bool:
    import json

    config = path / "config.json"
    if not config.exists():
        return True  # let the loader say what is wrong
    architectures = json.loads(config.read_text(encoding="utf-8")).get("architectures") or []
    return any(a.endswith("ForSequenceClassification") for a in architectures)


def rescore(
    candidates: pa.Table,
    positive_scores: pa.Table,
    corpus: pa.Table,
    queries: pa.Table,
    teacher: Teacher,
    batch_size: int = 32,
    chunk_size: int = 2048,
    progress: Callable[[int], None] | None = None,
) -> tuple[pa.Table, pa.Table]:
    """Teacher scores for every candidate and every labelled positive.

    Returns ``(scored_candidates, scored_positives)``: the input columns plus ``ce_score`` (raw
    teacher score, float32) and ``ce_prob`` (its [0, 1] scale; thresholds apply to this one).
    ``progress(n)`` is called after every ``n`` pairs scored. ``teacher`` is a loaded :class:`Teacher`, or
    anything with its ``kind``, ``name`` and ``map_parts`` (``negmine.engines.ray.RayTeacher``).
    Several teachers side by side: :func:`teacher_scores` of each, then :func:`scored_tables`.
    """
    pairs, query_texts, doc_texts_ = teacher_pairs(candidates, positive_scores, corpus, queries)
    scores = teacher_scores(teacher, query_texts, doc_texts_, batch_size, chunk_size, progress)
    return scored_tables(candidates, positive_scores, pairs, [scores], [{"label": "t1", "kind": teacher.kind, "model": teacher.name,
                                                                          "score_column": "ce_score", "prob_column": "ce_prob"}])


def teacher_scores(teacher: Teacher, query_texts: list[str], doc_texts_: list[str], batch_size: int = 32, chunk_size: int = 2048,
                   progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Raw scores of ``teacher`` for the pairs (query_texts[i], doc_texts_[i]) (of :func:`teacher_pairs`), part by part."""
    parts, combine = plan_scores(teacher.kind, query_texts, doc_texts_, chunk_size)
    results = []
    unit = "pairs" if teacher.kind == "cross-encoder" else "texts"
    with track(sum(len(part[1]) for part in parts), unit) as bar:
        for part, result in zip(parts, teacher.map_parts(parts, batch_size)):
            results.append(result)
            bar.advance(len(part[1]))
            if progress and part[0] == "pairs":
                progress(len(part[1]))
    scores = combine(results)
    if progress and teacher.kind == "bi-encoder" and len(query_texts):
        progress(len(query_texts))
    return scores


def teacher_pairs(candidates: pa.Table, positive_scores: pa.Table, corpus: pa.Table, queries: pa.Table) -> tuple[list[tuple[str, str]], list[str], list[str]]:
    """The distinct (query_id, doc_id) pairs of candidates and positives, sorted, with their query and document texts."""
    doc_text = dict(zip(corpus.column("doc_id").to_pylist(), doc_texts(corpus)))
    query_text = dict(zip(queries.column("query_id").to_pylist(), queries.column("text").to_pylist()))
    keys = [list(zip(t.column("query_id").to_pylist(), t.column("doc_id").to_pylist())) for t in (candidates, positive_scores)]
    unique = sorted(set(keys[0]) | set(keys[1]))
    for qid, did in unique:
        if qid not in query_text:
            raise StageError(f"query {qid!r} of the candidates is not in the queries table; rerun retrieval")
        if did not in doc_text:
            raise StageError(f"document {did!r} of the candidates is not in the corpus; rerun retrieval")
    return unique, [query_text[q] for q, _ in unique], [doc_text[d] for _, d in unique]


def scored_tables(candidates: pa.Table, positive_scores: pa.Table, pairs: list[tuple[str, str]], scores: list[np.ndarray],
                  teachers: list[dict]) -> tuple[pa.Table, pa.Table]:
    """The candidates and positives with each teacher's score and [0, 1] scale side by side: ``scores[t][i]`` is
    teacher t's score of ``pairs[i]``; ``teachers[t]`` its label, kind, model and columns (negmine.teachers)."""
    from negmine.teachers import scored_schema

    row = {k: i for i, k in enumerate(pairs)}
    out = []
    for table, base in ((candidates, SCORED_CANDIDATES), (positive_scores, SCORED_POSITIVES)):
        keys = list(zip(table.column("query_id").to_pylist(), table.column("doc_id").to_pylist()))
        index = np.asarray([row[p] for p in keys], dtype=np.int64)
        for teacher, teacher_scores_ in zip(teachers, scores):
            teacher_scores_ = np.asarray(teacher_scores_, dtype=np.float32)
            if not np.all(np.isfinite(teacher_scores_)):
                raise StageError(f"teacher {teacher['model']!r} gave non-finite scores")
            s = teacher_scores_[index] if len(index) else np.zeros(0, np.float32)
            table = table.append_column(teacher["score_column"], pa.array(s, pa.float32()))
            table = table.append_column(teacher["prob_column"], pa.array(teacher_probs(s, teacher["kind"]), pa.float32()))
        schema = scored_schema(base, teachers)
        out.append(table.select(schema.names).cast(schema))
    return out[0], out[1]
