"""The recipes in deploy/: no cluster or scheduler is reachable here, so each file is parsed and
every command line in it is read by the CLI's own parser and settings, as the pod would."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import shlex
import sys
import types
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest
import yaml

from collector.cli import build_parser
from collector.config import SPECS, Settings, load_settings
from tests.conftest import TOKEN

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
DAY = "2026-12-01"


def command(line: str, env: dict[str, str] | None = None) -> tuple[str, Settings | None]:
    """The subcommand and the settings a command line gives (templates filled in)."""
    line = re.sub(r"\{\{.*?\}\}", DAY, line.replace('"$DAY"', DAY))  # an Airflow template
    argv = shlex.split(line)
    if argv[0] == "exec":
        argv = argv[1:]
    assert argv[0] == "cph-collector", argv
    args = build_parser().parse_args(argv[1:])
    if args.command == "publish":
        assert args.snapshot_date == DAY
        return "publish", None
    flags = {name: getattr(args, name) for name in SPECS}
    return args.command, load_settings(flags, env or {})


RECIPE = DEPLOY / "kubernetes" / "cph-collector.yaml"
SCHEDULED = dt.datetime(2026, 12, 1, 2, 0, tzinfo=dt.UTC)  # the night's 02:00
JOB_NAME = f"cph-collector-shards-{int(SCHEDULED.timestamp()) // 60}"  # as the CronJob names it


def test_the_kubernetes_recipe_is_one_indexed_job_whose_shards_publish() -> None:
    (cron,) = yaml.safe_load_all(RECIPE.read_text())
    assert cron["kind"] == "CronJob" and cron["spec"]["startingDeadlineSeconds"] > 0
    job = cron["spec"]["jobTemplate"]["spec"]
    assert job["completionMode"] == "Indexed" and job["activeDeadlineSeconds"] < 24 * 3600
    assert job["completions"] == job["parallelism"] == 3
    (rule, _) = job["podFailurePolicy"]["rules"]
    assert rule == {"action": "FailJob", "onExitCodes": {"containerName": "shard",
                                                         "operator": "In", "values": [1, 4]}}
    pod = job["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (shard,) = pod["containers"]
    assert shard["securityContext"] == {"allowPrivilegeEscalation": False,
                                        "readOnlyRootFilesystem": True,
                                        "capabilities": {"drop": ["ALL"]}}
    assert set(shard["resources"]) == {"requests", "limits"}
    assert shard["envFrom"] == [{"secretRef": {"name": "cph-collector"}}]
    assert "Kubernetes 1.29 or later" in RECIPE.read_text()


@pytest.mark.parametrize("version", ["1.29.0", "1.37.0"])  # the minimum stated, the newest
def test_the_kubernetes_recipe_validates_strictly_against_the_official_schema(
        version: str) -> None:
    import kubernetes_validate

    (cron,) = yaml.safe_load_all(RECIPE.read_text())
    assert kubernetes_validate.validate(cron, version, strict=True) == version.rsplit(".", 1)[0]


def test_kubernetes_1_27_has_no_backoff_limit_per_index() -> None:
    """1.28 has the field but as alpha, off by default (its API server drops it); 1.29 is the
    first with it on: the minimum the recipe states."""
    import kubernetes_validate

    (cron,) = yaml.safe_load_all(RECIPE.read_text())
    del cron["spec"]["jobTemplate"]["spec"]["podFailurePolicy"]
    with pytest.raises(kubernetes_validate.ValidationError, match="backoffLimitPerIndex"):
        kubernetes_validate.validate(cron, "1.27.0", strict=True)


def pod_command(replace: dict[str, str]) -> str:
    """The shard pod's shell command, exactly, but for where it reads and writes (a folder on
    loopback instead of OBS) and the Pushgateway's address."""
    (cron,) = yaml.safe_load_all(RECIPE.read_text())
    (shard,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert shard["command"] == ["/bin/sh", "-c"]
    line = shard["args"][0]
    for old, new in replace.items():
        assert old in line
        line = line.replace(old, new)
    return str(line)


@pytest.mark.e2e
async def test_the_kubernetes_pods_publish_once_after_the_last_shard_on_the_scheduled_night(
        fake_factory: Any, tmp_path: Path) -> None:
    """Three pods as the Indexed Job starts them (JOB_COMPLETION_INDEX 0-2, JOB_NAME from the
    downward API), one killed with SIGKILL and replaced 10 s later (Kubernetes' first retry):
    one publish, of the night the CronJob scheduled, whatever today's date."""
    from collector.fake import Dataset

    dataset = Dataset(seed=91, images=240)
    fake = await fake_factory(dataset)
    ids = tmp_path / "ids.csv"
    ids.write_text("image_id\n" + "".join(f"{i}\n" for i in dataset.image_ids()))
    out = tmp_path / "nightly"
    line = pod_command({"obs://cph-data/ids.csv": str(ids), "obs://cph-data/nightly": str(out),
                        "0c4a57e3e7c04c3ab2a6d07fe49b8a96": dataset.project_ids[0],
                        "http://pushgateway.monitoring.svc:9091": "http://127.0.0.1:9"})
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path),
           "JOB_NAME": JOB_NAME, "CPH_ENDPOINT": fake.url, "CPH_AUTH_TOKEN": TOKEN}

    async def pod(index: int) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", line, env={**env, "JOB_COMPLETION_INDEX": str(index)},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)

    pods = [await pod(index) for index in range(3)]
    await asyncio.sleep(1.0)  # a third of the way: each shard does 33 requests a second
    pods[1].kill()
    ends = [await p.communicate() for p in pods]
    assert pods[1].returncode == -9
    await asyncio.sleep(10)
    replacement = await pod(1)
    ends.append(await replacement.communicate())
    codes = [pods[0].returncode, pods[2].returncode, replacement.returncode]
    assert codes == [0, 0, 0], [e[1].decode()[-500:] for e in ends]
    summaries = [orjson.loads(x) for o, _ in ends for x in o.decode().splitlines()]
    nights = [s for s in summaries if s["counts"].get("shards") == 3]
    assert len(nights) == 1 and nights[0]["status"] == "finished"  # exactly one published
    assert nights[0]["snapshot_date"] == "2026-12-01"  # the scheduled night, not the clock's
    import pyarrow.dataset as ds

    status = ds.dataset(out / "image_status", partitioning="hive").to_table().to_pylist()
    assert sorted(r["image_id"] for r in status) == sorted(dataset.image_ids())  # each once
    assert not list(out.glob("_staging/snapshot_date=*"))  # nothing left staged
    again = await pod(2)  # a pod retried after the night: its verdict, nothing collected
    asked = len(fake.log)
    stdout, _ = await again.communicate()
    assert again.returncode == 0 and len(fake.log) == asked
    assert orjson.loads(stdout.decode().splitlines()[-1])["run_id"] == nights[0]["run_id"]


class _Task:
    """Airflow's operators, as far as the DAG file uses them."""

    made: ClassVar[list[_Task]] = []

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs, self.downstream = kwargs, []
        _Task.made.append(self)

    @classmethod
    def partial(cls, **kwargs: Any) -> Any:
        return types.SimpleNamespace(expand=lambda **mapped: cls(**kwargs, mapped=mapped))

    def __rshift__(self, other: _Task) -> _Task:
        self.downstream.append(other)
        return other


def test_the_airflow_dag_maps_one_task_a_shard_then_publishes() -> None:
    airflow = types.ModuleType("airflow")
    bash = types.ModuleType("airflow.operators.bash")
    bash.BashOperator = _Task  # type: ignore[attr-defined]
    pendulum = types.ModuleType("pendulum")
    pendulum.datetime = lambda *a, **k: None  # type: ignore[attr-defined]
    pendulum.duration = lambda **k: None  # type: ignore[attr-defined]

    class Dag:
        def __init__(self, **kwargs: Any) -> None:
            self.kwargs = kwargs

        def __enter__(self) -> Dag:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

    airflow.DAG = Dag  # type: ignore[attr-defined]
    modules = {"airflow": airflow, "airflow.operators": types.ModuleType("airflow.operators"),
               "airflow.operators.bash": bash, "pendulum": pendulum}
    saved = {name: sys.modules.get(name) for name in modules}
    sys.modules.update(modules)
    _Task.made.clear()
    try:
        exec(compile((DEPLOY / "airflow" / "cph_collector.py").read_text(), "dag", "exec"), {})  # noqa: S102
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    collect, publish = _Task.made
    lines = collect.kwargs["mapped"]["bash_command"]
    shards = [command(line)[1] for line in lines]
    assert [s.shards.label for s in shards if s] == ["1/3", "2/3", "3/3"]
    assert collect.downstream == [publish]
    assert command(publish.kwargs["bash_command"])[0] == "publish"
    assert publish.kwargs["trigger_rule"] == "all_done"  # after the shards, however they ended


def test_the_one_host_recipe_runs_three_shards_then_publishes() -> None:
    lines = [line for line in (DEPLOY / "local" / "shards.sh").read_text().splitlines()
             if "cph-collector" in line and not line.startswith("#")]
    fan_out, publish = lines
    run = fan_out.split("xargs -P 3 -I {} ", 1)[1]
    for k in (1, 2, 3):
        kind, settings = command(run.replace("{}", str(k)))
        assert kind == "run" and settings is not None and settings.shards.label == f"{k}/3"
    assert command(publish)[0] == "publish"
