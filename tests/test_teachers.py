"""Several teachers side by side: labels, the columns each one's scores go to, and picking one by label."""

import json

import pyarrow as pa
import pytest

from negmine.errors import BadInputError
from negmine.schemas import SCORED_CANDIDATES
from negmine.teachers import TeacherSpec, check_label, described, parse_teachers, scored_schema, select_teacher, teachers_of


def test_teachers_are_labelled_by_position_unless_named():
    assert parse_teachers("bi-encoder:/m") == [TeacherSpec("t1", "bi-encoder:/m")]
    assert parse_teachers(["cross-encoder:org/ce", "mini=bi-encoder:/m", "bi-encoder:/x=y"]) == [
        TeacherSpec("t1", "cross-encoder:org/ce"), TeacherSpec("mini", "bi-encoder:/m", True), TeacherSpec("t3", "bi-encoder:/x=y")]


@pytest.mark.parametrize(("teachers", "reason"), [
    ([], "give at least one teacher"),
    (None, "give at least one teacher"),
    (["bi-encoder:/a", 3], "teacher 2 must be a spec"),
    (["bi-encoder:/a", " "], "teacher 2 must be a spec"),
    (["a=bi-encoder:/a", "a=bi-encoder:/b"], "the label 'a' names two teachers"),
    (["bi-encoder:/a", "t1=bi-encoder:/b"], "the label 't1' names two teachers"),
    (["x="], "teacher 1, 'x=': a label needs a teacher after '='"),
])
def test_bad_teacher_lists_name_the_option(teachers, reason):
    with pytest.raises(BadInputError) as info:
        parse_teachers(teachers)
    assert info.value.path == "--teacher" and reason in info.value.reason


def test_one_unlabelled_teacher_keeps_the_one_teacher_layout_and_others_add_named_columns():
    one = described(parse_teachers("bi-encoder:/m"), ["bi-encoder"], ["/m"])
    assert scored_schema(SCORED_CANDIDATES, one) is SCORED_CANDIDATES
    two = described(parse_teachers(["cross-encoder:/ce", "mini=bi-encoder:/m"]), ["cross-encoder", "bi-encoder"], ["/ce", "/m"])
    schema = scored_schema(SCORED_CANDIDATES, two)
    assert schema.names == SCORED_CANDIDATES.names + ["ce_score_mini", "ce_prob_mini"]
    assert [t["label"] for t in teachers_of(schema)] == ["t1", "mini"]
    assert json.loads(schema.metadata[b"negmine.teachers"])[1] == {
        "label": "mini", "kind": "bi-encoder", "model": "/m", "score_column": "ce_score_mini", "prob_column": "ce_prob_mini"}
    labelled = described(parse_teachers("ce=cross-encoder:/ce"), ["cross-encoder"], ["/ce"])
    assert scored_schema(SCORED_CANDIDATES, labelled).names == SCORED_CANDIDATES.names  # one teacher, named: its label is recorded
    assert teachers_of(scored_schema(SCORED_CANDIDATES, labelled))[0]["label"] == "ce"


def test_select_teacher_puts_the_chosen_scores_in_ce_score():
    two = described(parse_teachers(["cross-encoder:/ce", "mini=bi-encoder:/m"]), ["cross-encoder", "bi-encoder"], ["/ce", "/m"])
    schema = scored_schema(pa.schema([pa.field("doc_id", pa.string()), pa.field("ce_score", pa.float32()), pa.field("ce_prob", pa.float32())]), two)
    table = pa.table({"doc_id": ["a"], "ce_score": [1.0], "ce_prob": [0.7], "ce_score_mini": [0.2], "ce_prob_mini": [0.6]}).cast(schema)
    assert select_teacher(table, schema).to_pylist() == [{"doc_id": "a", "ce_score": 1.0, "ce_prob": pytest.approx(0.7)}]
    assert select_teacher(table, schema, "t1").to_pylist() == select_teacher(table, schema).to_pylist()
    assert select_teacher(table, schema, "mini").to_pylist() == [{"doc_id": "a", "ce_score": pytest.approx(0.2), "ce_prob": pytest.approx(0.6)}]
    with pytest.raises(BadInputError, match=r"unknown teacher 'big'; the run's teachers are \['t1', 'mini'\]") as info:
        select_teacher(table, schema, "big")
    assert info.value.path == "--teacher-name"
    one = pa.table({"doc_id": ["a"], "ce_score": [1.0], "ce_prob": [0.7]})
    assert select_teacher(one, one.schema, "t1").column("ce_score").to_pylist() == [1.0]


def test_check_label():
    assert check_label(None) is None and check_label("mini_2") == "mini_2"
    with pytest.raises(BadInputError, match="'2x' is not a teacher label") as info:
        check_label("2x")
    assert info.value.path == "--teacher-name"
