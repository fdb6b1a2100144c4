"""The recipes in deploy/: no cluster or scheduler is reachable here, so each file is parsed and
every command line in it is read by the CLI's own parser and settings, as the pod would."""

from __future__ import annotations

import shlex
import sys
import types
from pathlib import Path
from typing import Any, ClassVar

import yaml

from collector.cli import build_parser
from collector.config import SPECS, Settings, load_settings

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
DAY = "2026-12-01"


def command(line: str, env: dict[str, str] | None = None) -> tuple[str, Settings | None]:
    """The subcommand and the settings a command line gives (templates filled in)."""
    line = line.replace('"$(date -u +%F)"', DAY).replace('"$DAY"', DAY).replace("{{ ds }}", DAY)
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


def test_the_kubernetes_recipe_is_an_indexed_job_of_shards_then_a_publish() -> None:
    shards, publish = yaml.safe_load_all((DEPLOY / "kubernetes" / "cph-collector.yaml").read_text())
    assert (shards["kind"], publish["kind"]) == ("CronJob", "CronJob")
    job = shards["spec"]["jobTemplate"]["spec"]
    assert job["completionMode"] == "Indexed"
    assert job["completions"] == job["parallelism"] == 3
    (pod,) = job["template"]["spec"]["containers"]
    assert pod["envFrom"] == [{"secretRef": {"name": "cph-collector"}}]
    assert pod["command"] == ["/bin/sh", "-c"]
    for index in range(3):
        kind, settings = command(pod["args"][0], {"JOB_COMPLETION_INDEX": str(index)})
        assert kind == "run" and settings is not None
        assert settings.shard == f"{index + 1}/3" and str(settings.output) == \
            "obs://cph-data/nightly"
        assert str(settings.snapshot_date) == DAY
    (publisher,) = publish["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert command(publisher["args"][0])[0] == "publish"
    assert "--shards 3" in publisher["args"][0]
    assert publish["spec"]["schedule"] > shards["spec"]["schedule"]  # 05:00 after 02:00


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
    assert [s.shard for s in shards if s] == ["1/3", "2/3", "3/3"]
    assert collect.downstream == [publish]
    assert command(publish.kwargs["bash_command"])[0] == "publish"


def test_the_one_host_recipe_runs_three_shards_then_publishes() -> None:
    lines = [line for line in (DEPLOY / "local" / "shards.sh").read_text().splitlines()
             if "cph-collector" in line and not line.startswith("#")]
    fan_out, publish = lines
    run = fan_out.split("xargs -P 3 -I {} ", 1)[1]
    for k in (1, 2, 3):
        kind, settings = command(run.replace("{}", str(k)))
        assert kind == "run" and settings is not None and settings.shard == f"{k}/3"
    assert command(publish)[0] == "publish"
