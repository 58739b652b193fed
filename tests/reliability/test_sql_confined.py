"""``negmine sql`` reads the run's own tables and nothing else unless ``--allow-external`` is given:
no file outside the run is readable, no file is written (COPY TO), no extension is installed or
loaded, no other database is attached, and a statement cannot lift these limits (SET / RESET).
A refused statement exits 2 naming what was refused and the flag."""

import json

import pyarrow as pa
import pytest

from helpers import invoke

from negmine.errors import BadInputError
from negmine.io import write_table

BAD_INPUT = 2
SCHEMA = pa.schema([("query_id", pa.string()), ("doc_id", pa.string())])


@pytest.fixture
def run(tmp_path):
    run = tmp_path / "run"
    write_table(pa.table({"query_id": ["q1", "q2"], "doc_id": ["d1", "d2"]}), run / "qrels.parquet", SCHEMA)
    write_table(pa.table({"query_id": ["q1"], "doc_id": ["d9"]}), run / "negatives_topk.parquet", SCHEMA)
    (run / "manifest.json").write_text(json.dumps({"schema_version": 1, "stages": {}}))
    return run


@pytest.fixture
def secret(tmp_path):
    path = tmp_path / "outside" / "secret.csv"
    path.parent.mkdir()
    path.write_text("word\nsesame-7f3a\n")
    return path


def refused(run, statement, what):
    result = invoke("sql", "--run", run, statement)
    assert result.exit_code == BAD_INPUT, result.output
    assert "Traceback" not in result.output
    assert what in result.output and "--allow-external" in result.output, result.output
    return result


def test_the_runs_tables_and_files_stay_readable(run):
    result = invoke("sql", "--run", run, "--format", "csv", "SELECT count(*) AS n FROM qrels")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["n", "2"]
    result = invoke("sql", "--run", run, "--format", "csv", f"SELECT schema_version FROM read_json('{run / 'manifest.json'}')")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["schema_version", "1"]


@pytest.mark.parametrize("reader", ["read_csv", "read_text"])
def test_a_file_outside_the_run_is_not_readable(run, secret, reader):
    result = refused(run, f"SELECT * FROM {reader}('{secret}')", str(secret))
    assert "sesame-7f3a" not in result.output


def test_a_relative_path_cannot_climb_out_of_the_run(run, secret, monkeypatch):
    monkeypatch.chdir(run)
    result = refused(run, "SELECT * FROM read_csv('../outside/secret.csv')", "secret.csv")
    assert "sesame-7f3a" not in result.output


@pytest.mark.parametrize("inside", [False, True], ids=["outside-the-run", "inside-the-run"])
def test_copy_to_writes_no_file(run, tmp_path, inside):
    target = (run if inside else tmp_path) / "written.csv"
    refused(run, f"COPY (SELECT 42 AS x) TO '{target}'", "COPY")
    assert not target.exists()


@pytest.mark.parametrize("statement", ["INSTALL httpfs", "LOAD httpfs", "FORCE INSTALL json"])
def test_extensions_are_neither_installed_nor_loaded(run, statement):
    refused(run, statement, statement.split()[0] if statement != "FORCE INSTALL json" else "INSTALL")


@pytest.mark.parametrize("target", ["':memory:' AS other", "'{tmp}/other.duckdb' AS other"])
def test_no_database_is_attached(run, tmp_path, target):
    refused(run, f"ATTACH {target.format(tmp=tmp_path)}", "ATTACH")
    assert not (tmp_path / "other.duckdb").exists()


@pytest.mark.parametrize("lift", ["SET enable_external_access = true", "RESET enable_external_access", "SET allowed_directories = ['/']", "SET lock_configuration = false"])
def test_a_statement_cannot_lift_the_limits(run, secret, lift):
    result = refused(run, f"{lift}; SELECT * FROM read_csv('{secret}')", "SET" if lift.startswith("SET") else "RESET")
    assert "sesame-7f3a" not in result.output


@pytest.mark.parametrize("statement", ["CREATE TABLE t AS SELECT 1 AS x", "DROP VIEW qrels", "CREATE OR REPLACE VIEW qrels AS SELECT 1 AS x"])
def test_the_session_is_read_only(run, statement):
    refused(run, statement, statement.split()[0])


def test_allow_external_lifts_the_limits_and_help_says_so(run, tmp_path, secret):
    target = tmp_path / "written.csv"
    result = invoke("sql", "--run", run, "--allow-external", f"COPY (SELECT * FROM read_csv('{secret}')) TO '{target}'")
    assert result.exit_code == 0, result.output
    assert "sesame-7f3a" in target.read_text()
    help_text = invoke("sql", "--help").output
    assert "--allow-external" in help_text


def test_the_python_api_is_confined_by_default(run, secret):
    from negmine.sql import query

    with pytest.raises(BadInputError, match="--allow-external"):
        query(run, f"SELECT * FROM read_csv('{secret}')")
    _, rows = query(run, f"SELECT * FROM read_csv('{secret}')", allow_external=True)
    assert rows == [("sesame-7f3a",)]
