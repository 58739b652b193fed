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
``scored_positives_<source>`` = the positive-scores columns + ``ce_score``, ``ce_prob``.
Each distinct (query, document) pair is scored once; the output does not depend on batch size
beyond floating-point noise of padded batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa

from negmine.candidates import doc_texts
from negmine.errors import BadInputError, StageError
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

    def scores(self, queries: list[str], docs: list[str], batch_size: int = 32) -> np.ndarray:
        import torch

        if not queries:
            return np.zeros(0, np.float32)
        if self.kind == "cross-encoder":
            with torch.inference_mode():
                z = self.model.predict(
                    list(zip(queries, docs)), batch_size=batch_size, activation_fn=torch.nn.Identity(), show_progress_bar=False
                )
            return np.asarray(z, dtype=np.float32).reshape(len(queries))
        from negmine.dense import encode

        # each distinct text is encoded once: a query has ~100 candidates, a document recurs across queries
        uq, q_of = np.unique(np.asarray(queries, dtype=object), return_inverse=True)
        ud, d_of = np.unique(np.asarray(docs, dtype=object), return_inverse=True)
        q = encode(self.model, list(uq), batch_size)
        d = encode(self.model, list(ud), batch_size)
        return np.einsum("ij,ij->i", q[q_of], d[d_of]).astype(np.float32)

    def probs(self, scores: np.ndarray) -> np.ndarray:
        return teacher_probs(scores, self.kind)


def teacher_probs(scores: np.ndarray, kind: str) -> np.ndarray:
    """σ(z) for a cross-encoder logit; (cos + 1) / 2 for a bi-encoder cosine (see module docstring)."""
    s = np.asarray(scores, dtype=np.float64)
    if kind == "cross-encoder":
        return (1.0 / (1.0 + np.exp(-s))).astype(np.float32)
    if kind == "bi-encoder":
        return np.clip((s + 1.0) / 2.0, 0.0, 1.0).astype(np.float32)
    raise StageError(f"unknown teacher kind {kind!r}; choose from {sorted(TEACHER_KINDS)}")


def load_teacher(spec: str, max_length: int | None = 512, device: str | None = None) -> Teacher:
    """Load a teacher by spec (see :func:`parse_teacher`) with the real sentence-transformers loaders."""
    kind, name = parse_teacher(spec)
    local = Path(name).expanduser()
    if kind == "bi-encoder":
        from negmine.dense import load_model

        return Teacher(kind, name, load_model(name, max_length, device))
    try:
        from sentence_transformers import CrossEncoder
    except ImportError:
        raise StageError("the rescore stage needs sentence-transformers: pip install sentence-transformers") from None
    if not local.exists() and (name.startswith((".", "/", "~")) or name.count("/") > 1):
        raise BadInputError(name, "teacher model path does not exist", field="teacher")
    if local.is_dir() and not _is_sequence_classifier(local):
        raise BadInputError(
            name,
            "not a cross-encoder (config.json has no *ForSequenceClassification architecture); "
            f"to use a bi-encoder as teacher pass --teacher bi-encoder:{name}",
            field="teacher",
        )
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
    ``progress(n)`` is called after every ``n`` pairs scored.
    """
    doc_text = dict(zip(corpus.column("doc_id").to_pylist(), doc_texts(corpus)))
    query_text = dict(zip(queries.column("query_id").to_pylist(), queries.column("text").to_pylist()))
    keys = [
        list(zip(t.column("query_id").to_pylist(), t.column("doc_id").to_pylist())) for t in (candidates, positive_scores)
    ]
    unique = sorted(set(keys[0]) | set(keys[1]))
    for qid, did in unique:
        if qid not in query_text:
            raise StageError(f"query {qid!r} of the candidates is not in the queries table; rerun retrieval")
        if did not in doc_text:
            raise StageError(f"document {did!r} of the candidates is not in the corpus; rerun retrieval")
    scores = np.zeros(len(unique), np.float32)
    if teacher.kind == "bi-encoder":  # one call, so each distinct text is encoded once
        chunk_size = max(len(unique), 1)
    for start in range(0, len(unique), chunk_size):
        chunk = unique[start : start + chunk_size]
        scores[start : start + len(chunk)] = teacher.scores([query_text[q] for q, _ in chunk], [doc_text[d] for _, d in chunk], batch_size)
        if progress:
            progress(len(chunk))
    if not np.all(np.isfinite(scores)):
        raise StageError(f"teacher {teacher.name!r} gave non-finite scores")
    row = {k: i for i, k in enumerate(unique)}
    out = []
    for table, pairs, schema in zip((candidates, positive_scores), keys, (SCORED_CANDIDATES, SCORED_POSITIVES)):
        s = scores[[row[p] for p in pairs]] if pairs else np.zeros(0, np.float32)
        table = table.append_column("ce_score", pa.array(s, pa.float32())).append_column("ce_prob", pa.array(teacher.probs(s), pa.float32()))
        out.append(table.select(schema.names).cast(schema))
    return out[0], out[1]
