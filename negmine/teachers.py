"""Several teachers side by side: their labels, and which columns of the rescore tables hold each one's scores.

``negmine rescore --teacher SPEC`` may be given several times (a list in recipes and the Python API).
Each teacher has a label, ``LABEL=SPEC`` or by default ``t1``, ``t2`` … in the order given. The
first teacher's scores are ``ce_score`` and ``ce_prob`` of ``scored_candidates_<source>`` and
``scored_positives_<source>`` (the columns a run with one teacher has always had); every other
teacher adds ``ce_score_<label>`` and ``ce_prob_<label>`` after them. When the tables hold more than
one teacher, or a labelled one, their Parquet schema metadata ``negmine.teachers`` lists each
teacher's label, kind and model in order, so the tables say which column is whose.

Stages that use *one* teacher (``denoise``, ``simans --score ce``, the teacher estimate of
``estimate-fn``, the ``ce_score`` columns of the negatives) take the first unless told another by
label (``--teacher-name``); the false-negative model uses them all.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Sequence

import pyarrow as pa

from negmine.errors import BadInputError

METADATA_KEY = b"negmine.teachers"
_LABEL = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")
_LABELLED = re.compile(r"([A-Za-z_][A-Za-z0-9_]{0,39})=(.*)", re.DOTALL)


@dataclass(frozen=True)
class TeacherSpec:
    """A teacher of a list: its label, its spec without the label (``KIND:NAME``), and whether the label was given."""

    label: str
    spec: str
    labelled: bool = False


def parse_teachers(teachers: str | Sequence[str] | None, option: str = "--teacher") -> list[TeacherSpec]:
    """The teachers of ``--teacher`` (one spec or a list of them), each ``SPEC`` or ``LABEL=SPEC``.

    A label is 1 to 40 of ``A-Z a-z 0-9 _``, not starting with a digit (it ends a column name); an
    unlabelled teacher is ``t<i>``, its position from 1. An empty list, an entry that is not a string
    and a label given twice are bad input naming ``option``.
    """
    if isinstance(teachers, str):
        teachers = [teachers]
    if teachers is None or isinstance(teachers, (bytes, dict)) or not isinstance(teachers, Sequence) or len(teachers) == 0:
        raise BadInputError(option, f"give at least one teacher (cross-encoder:NAME_OR_PATH or bi-encoder:NAME_OR_PATH), got {teachers!r}")
    specs = []
    for i, entry in enumerate(teachers, start=1):
        if not isinstance(entry, str) or not entry.strip():
            raise BadInputError(option, f"teacher {i} must be a spec such as bi-encoder:NAME_OR_PATH, got {entry!r}")
        found = _LABELLED.fullmatch(entry)
        if found:
            if not found.group(2):
                raise BadInputError(option, f"teacher {i}, {entry!r}: a label needs a teacher after '='")
            specs.append(TeacherSpec(found.group(1), found.group(2), True))
        else:
            specs.append(TeacherSpec(f"t{i}", entry))
    labels = [s.label for s in specs]
    for label in labels:
        if labels.count(label) > 1:
            raise BadInputError(option, f"the label {label!r} names two teachers; give each teacher its own label (LABEL=SPEC)")
    return specs


def columns(index: int, label: str) -> tuple[str, str]:
    """(score column, prob column) of the teacher at ``index`` (from 0) of the list."""
    return ("ce_score", "ce_prob") if index == 0 else (f"ce_score_{label}", f"ce_prob_{label}")


def described(specs: list[TeacherSpec], kinds: list[str], names: list[str]) -> list[dict]:
    """Each teacher's label, kind, model and columns, in order (the tables' metadata and the rescore stage's stats)."""
    return [{"label": s.label, "kind": kind, "model": name, "score_column": columns(i, s.label)[0], "prob_column": columns(i, s.label)[1]}
            for i, (s, kind, name) in enumerate(zip(specs, kinds, names))]


def scored_schema(base: pa.Schema, teachers: list[dict] | None = None) -> pa.Schema:
    """``base`` (SCORED_CANDIDATES or SCORED_POSITIVES) with the columns of every teacher after the first, and
    the teachers in the metadata; ``base`` itself for one unlabelled teacher (the layout of a one-teacher run)."""
    if not teachers or (len(teachers) == 1 and teachers[0]["label"] == "t1"):
        return base
    fields = list(base)
    for t in teachers[1:]:
        fields += [pa.field(t["score_column"], pa.float32(), nullable=False), pa.field(t["prob_column"], pa.float32(), nullable=False)]
    return pa.schema(fields, metadata={METADATA_KEY: json.dumps(teachers, sort_keys=True).encode()})


def teachers_of(schema: pa.Schema) -> list[dict]:
    """The teachers a scored table holds (from its metadata; one teacher ``t1`` in ``ce_score`` when it has none)."""
    raw = (schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        return [{"label": "t1", "score_column": "ce_score", "prob_column": "ce_prob"}]
    return json.loads(raw)


def select_teacher(table: pa.Table, schema: pa.Schema, name: str | None = None, option: str = "--teacher-name") -> pa.Table:
    """``table`` with the scores of the teacher labelled ``name`` (None: the first) as ``ce_score`` and ``ce_prob``,
    the other teachers' columns left out; ``schema`` is the file's (its metadata names the teachers)."""
    teachers = teachers_of(schema)
    if name is None:
        chosen = teachers[0]
    else:
        by_label = {t["label"]: t for t in teachers}
        if name not in by_label:
            raise BadInputError(option, f"unknown teacher {name!r}; the run's teachers are {[t['label'] for t in teachers]}")
        chosen = by_label[name]
    base = [c for c in table.column_names if not c.startswith(("ce_score", "ce_prob"))]
    picked = table.select(base + [chosen["score_column"], chosen["prob_column"]])
    return picked.rename_columns(base + ["ce_score", "ce_prob"])


def check_label(name: str | None, option: str = "--teacher-name") -> str | None:
    """A teacher label chosen by the user (None: the first teacher)."""
    if name is not None and (not isinstance(name, str) or not _LABEL.fullmatch(name)):
        raise BadInputError(option, f"{name!r} is not a teacher label: 1 to 40 of A-Z a-z 0-9 _, not starting with a digit")
    return name


def read_scored(path, base: pa.Schema, what: str) -> tuple[pa.Table, pa.Schema]:
    """A scored table with the columns of every teacher it holds, and its schema (checked as negmine.io.read_table checks)."""
    import pyarrow.parquet as pq

    from negmine.io import read_table

    try:
        held = teachers_of(pq.read_schema(path))
    except (OSError, pa.ArrowInvalid, ValueError):
        held = None  # read_table names what is wrong with the file
    schema = scored_schema(base, held) if held and "kind" in held[0] else base
    return read_table(path, schema, what), schema
