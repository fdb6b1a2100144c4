"""cph-collector as an Airflow DAG (Airflow 2.x and 3.x): three shards by dynamic task mapping,
then one publish.

Each mapped task is one shard (``--shard K/3``); a staged shard succeeds whatever its images'
statuses, and one that fails (exit 3, a killed worker) is retried by Airflow and resumes from
its own committed chunks. The publish follows the shards when they are all done, whatever their
end (``all_done``): it exits 3 naming a shard that did not stage. Its 1 and 4 are the night's
verdict; a retry gives them again, so the DAG run stays failed.

The night's date is fixed by the DAG run, not by the clock: ``data_interval_end``, the 02:00
the run is for on Airflow 2 and 3 alike (``ds`` is not: it is D on Airflow 3 and D-1 on
Airflow 2), or, for an Airflow 3 manual trigger without a logical date (no data interval),
the run's ``run_after``. A task retried after midnight works on its night.

Retries wait ``CPH_AIRFLOW_RETRY_DELAY`` seconds (default 300; CI sets a few seconds).
"""

from __future__ import annotations

import os

import pendulum

try:  # Airflow 3, and Airflow 2 with the standard provider
    from airflow.providers.standard.operators.bash import BashOperator
except ImportError:  # Airflow 2 without it
    from airflow.operators.bash import BashOperator  # type: ignore[no-redef]
try:
    from airflow.sdk import DAG
except ImportError:  # Airflow 2
    from airflow import DAG  # type: ignore[no-redef,assignment]

SHARDS = 3
OUTPUT = "obs://cph-data/nightly"
NIGHT = ("{{ (data_interval_end if data_interval_end is defined and data_interval_end "
         "else dag_run.run_after).strftime('%Y-%m-%d') }}")
COMMON = ("--input obs://cph-data/ids.csv --project-id 0c4a57e3e7c04c3ab2a6d07fe49b8a96 "
          f"--region cn-north-4 --output {OUTPUT} --rate-limit 100 --snapshot-date {NIGHT}")

with DAG(dag_id="cph_collector", schedule="0 2 * * *", catchup=False,
         start_date=pendulum.datetime(2026, 12, 1, tz="UTC"),
         default_args={"retries": 3, "retry_delay": pendulum.duration(
             seconds=int(os.environ.get("CPH_AIRFLOW_RETRY_DELAY", "300")))}) as dag:
    shards = BashOperator.partial(task_id="collect_shard", env={"CPH_LOG_FORMAT": "json"},
                                  append_env=True).expand(
        bash_command=[f"cph-collector run {COMMON} --shard {k}/{SHARDS}"
                      for k in range(1, SHARDS + 1)])
    publish = BashOperator(
        task_id="publish", trigger_rule="all_done", env={"CPH_LOG_FORMAT": "json"},
        append_env=True,
        bash_command=(f"cph-collector publish --output {OUTPUT} --region cn-north-4 "
                      f"--shards {SHARDS} --snapshot-date {NIGHT} --fail-on-untrusted"))
    shards >> publish
