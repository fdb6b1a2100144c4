"""cph-collector as an Airflow DAG: three shards by dynamic task mapping, then one publish.

Each mapped task is one shard (``--shard K/3``) of the run's snapshot date ``{{ ds }}``; a
shard that fails is retried by Airflow and resumes from its own committed chunks. The publish
runs once every shard succeeded, and exits 3 naming a shard that did not.
"""

from __future__ import annotations

import pendulum
from airflow import DAG
from airflow.operators.bash import BashOperator

SHARDS = 3
OUTPUT = "obs://cph-data/nightly"
COMMON = ("--input obs://cph-data/ids.csv --project-id 0c4a57e3e7c04c3ab2a6d07fe49b8a96 "
          f"--region cn-north-4 --output {OUTPUT} --rate-limit 100 --snapshot-date {{{{ ds }}}}")

with DAG(dag_id="cph_collector", schedule="0 2 * * *", catchup=False,
         start_date=pendulum.datetime(2026, 12, 1, tz="UTC"),
         default_args={"retries": 3, "retry_delay": pendulum.duration(minutes=5)}) as dag:
    shards = BashOperator.partial(task_id="collect_shard", env={"CPH_LOG_FORMAT": "json"},
                                  append_env=True).expand(
        bash_command=[f"cph-collector run {COMMON} --shard {k}/{SHARDS}"
                      for k in range(1, SHARDS + 1)])
    publish = BashOperator(
        task_id="publish",
        bash_command=(f"cph-collector publish --output {OUTPUT} --region cn-north-4 "
                      f"--shards {SHARDS} --snapshot-date {{{{ ds }}}} --fail-on-untrusted"))
    shards >> publish
