"""The Airflow example's task graph, checked without Airflow (it is not installed: it would pull ~70 packages).

The file is parsed with ast: one BashOperator per stage, the dependency edges, and every command a real
negmine subcommand whose options exist (checked against the Typer app).
"""

import ast
import shlex

import typer

from negmine.cli import app

from conftest import ROOT

DAG_FILE = ROOT / "pipelines" / "airflow" / "negmine_dag.py"


def _tasks_and_edges():
    tree = ast.parse(DAG_FILE.read_text())
    tasks, edges = {}, set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and getattr(node.value.func, "id", None) == "BashOperator":
            kwargs = {k.arg: k.value for k in node.value.keywords}
            command = kwargs["bash_command"]
            text = "".join(v.value if isinstance(v, ast.Constant) else "X" for v in command.values) if isinstance(command, ast.JoinedStr) else command.value
            tasks[node.targets[0].id] = (kwargs["task_id"].value, text)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.BinOp) and isinstance(node.value.op, ast.RShift):
            names = lambda n: [e.id for e in n.elts] if isinstance(n, ast.List) else [n.id]
            edges |= {(a, b) for a in names(node.value.left) for b in names(node.value.right)}
    return tasks, edges


def test_one_task_per_stage_in_data_flow_order():
    tasks, edges = _tasks_and_edges()
    assert {var: task_id for var, (task_id, _) in tasks.items()} == {s: s for s in ("ingest", "bm25", "dense", "sample", "export")}
    assert edges == {("ingest", "bm25"), ("ingest", "dense"), ("bm25", "sample"), ("dense", "sample"), ("sample", "export")}


def test_every_command_is_a_negmine_command_with_real_options():
    group = typer.main.get_command(app)
    tasks, _ = _tasks_and_edges()
    for task_id, text in tasks.values():
        argv = shlex.split(text)
        assert argv[0] == "negmine" and argv[1] == task_id
        command = group.commands[argv[1]]
        known = {opt for param in command.params if param.param_type_name == "option" for opt in param.opts + param.secondary_opts}
        assert {a for a in argv[2:] if a.startswith("--")} <= known, task_id
