"""Airflow example: one BashOperator per negmine stage, ingest → bm25 / dense → sample → export.

Every task is a negmine command on the same run directory. negmine skips a stage whose config and
input hashes are unchanged (manifest.json) and writes atomically, so a retried or rerun task is
idempotent: it either finds its outputs fresh and exits 0 at once, or redoes exactly its own stage.
Exit code 3 (run directory locked by another negmine) is worth a retry; 2 (bad input) is not.

Set the Airflow Variables negmine_data, negmine_runs and negmine_model, or edit the defaults below.
"""

from __future__ import annotations

import pendulum
from airflow import DAG
from airflow.models import Variable
from airflow.operators.bash import BashOperator

DATA = Variable.get("negmine_data", default_var="/data/scifact")
RUN = Variable.get("negmine_runs", default_var="/runs") + "/{{ dag.dag_id }}"
MODEL = Variable.get("negmine_model", default_var="sentence-transformers/all-MiniLM-L6-v2")
STRATEGY = "simans"

with DAG(
    dag_id="negmine_simans",
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    schedule=None,
    catchup=False,
    default_args={"retries": 2, "retry_delay": pendulum.duration(minutes=1)},
    tags=["negmine"],
) as dag:
    ingest = BashOperator(task_id="ingest", bash_command=f"negmine ingest --data {DATA} --out {RUN} --json")
    bm25 = BashOperator(task_id="bm25", bash_command=f"negmine bm25 --run {RUN} --k 100 --json")
    dense = BashOperator(task_id="dense", bash_command=f"negmine dense --run {RUN} --model {MODEL} --k 100 --json")
    sample = BashOperator(task_id="sample", bash_command=f"negmine sample --run {RUN} --strategy {STRATEGY} --source dense --json")
    export = BashOperator(
        task_id="export",
        bash_command=f"negmine export --run {RUN} --strategy {STRATEGY} --format sentence-transformers --out {RUN}/export/{STRATEGY}.parquet --json",
    )

    ingest >> [bm25, dense]
    [bm25, dense] >> sample
    sample >> export
