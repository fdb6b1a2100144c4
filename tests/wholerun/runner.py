"""A night of a Scenario acted out: the fake server (a thread of this process, on 127.0.0.1),
moto's S3 for a bucket, and the real CLI (``python -m collector``) in subprocesses, started in
the drawn interleaving, signalled at the drawn moment and run again as the README says."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from collector.fake import Dataset, FakeCph, ServerConfig
from tests.wholerun.draw import OTHER_DATE, Scenario, World

TOKEN = "wholerun-token-5d2c"
PASSWORD = "wholerun-pass-9e1f"
IAM_USER = ("acct", "nightly")
S3_KEYS = {"AWS_ACCESS_KEY_ID": "wholerun-key", "AWS_SECRET_ACCESS_KEY": "wholerun-secret-7a"}
STEP_TIMEOUT = 240.0  # seconds; a step that takes longer is a hang, reported as such
RERUNS = 3  # how often a killed or refused step is run again


class FakeThread:
    """The fake CPH on its own event loop in a thread, so the CLI runs can be plain
    subprocesses while the server keeps its log."""

    def __init__(self, dataset: Dataset, config: ServerConfig, port: int = 0) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.fake = FakeCph(dataset, config)
        self.url = self._call(self.fake.start(port=port))

    def _call(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout=30)

    def requested(self) -> set[str]:
        return self.fake.requested_images()

    def close(self) -> None:
        self._call(self.fake.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


class Moto:
    """moto's S3 server on loopback, once per process; a new bucket per scenario."""
    _server: Any = None
    _made = 0

    @classmethod
    def endpoint(cls) -> str:
        if cls._server is None:
            import logging

            from moto.server import ThreadedMotoServer

            logging.getLogger("werkzeug").setLevel(logging.WARNING)
            cls._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            cls._server.start()
        host, port = cls._server.get_host_and_port()
        return f"http://{host}:{port}"

    @classmethod
    def filesystem(cls) -> Any:
        import pyarrow.fs as pafs

        return pafs.S3FileSystem(access_key=S3_KEYS["AWS_ACCESS_KEY_ID"],
                                 secret_key=S3_KEYS["AWS_SECRET_ACCESS_KEY"],
                                 region="us-east-1", endpoint_override=cls.endpoint(),
                                 allow_bucket_creation=True)

    @classmethod
    def bucket(cls, seed: int) -> str:
        cls._made += 1
        name = f"wholerun-{seed % 10**9}-{cls._made}-{os.getpid() % 10_000}"
        cls.filesystem().create_dir(name)
        return name


@dataclass
class Step:
    """One CLI command of a night."""
    name: str  # e.g. "shard 2/3", "publish", "run 2027-01-15"
    role: str  # run, plan, shard, publish, other, premature
    args: list[str]
    delay: float = 0.0  # seconds after its phase began
    kill: tuple[int, float] | None = None  # (signal, seconds after it started)
    metrics: Path | None = None


@dataclass
class Done:
    """How a step ended."""
    step: Step
    code: int
    stdout: str
    stderr: str
    killed: bool
    seconds: float

    @property
    def refused(self) -> bool:
        """Exit 2 because another writer holds the output (the README's lock)."""
        return self.code == 2 and "another cph-collector run" in self.stderr

    @property
    def run_id(self) -> str | None:
        for line in self.stdout.splitlines():
            if line.startswith("run "):
                return line.split()[1]
        return None

    def summary(self) -> str:
        lines = [x for x in self.stdout.splitlines() if x.startswith("run ")]
        error = [x for x in self.stderr.strip().splitlines() if "error" in x.lower()]
        text = (lines[-1][:300] if lines else "") + (f" | {error[-1][:300]}" if error else "")
        return f"{self.step.name} ({self.seconds:.1f} s): exit {self.code}" \
               f"{' (signalled)' if self.killed else ''}: " \
               f"{text}"


@dataclass
class NightRun:
    """Everything a night's commands did, in order, and the fake that served it."""
    done: list[Done] = field(default_factory=list)
    requested: set[str] = field(default_factory=set)

    def last(self, role: str, name: str | None = None) -> Done | None:
        found = [d for d in self.done if d.step.role == role
                 and (name is None or d.step.name == name)]
        return found[-1] if found else None


class Output:
    """Where a scenario writes: a temporary folder, or a bucket of moto's."""

    def __init__(self, scenario: Scenario, work: Path) -> None:
        self.bucket = Moto.bucket(scenario.seed) if scenario.bucket else None
        self.url = f"s3://{self.bucket}/nightly" if self.bucket else str(work / "out")
        self.args = [] if self.bucket is None else ["--storage-endpoint", Moto.endpoint()]

    def reader(self) -> Any:
        from tests.wholerun.observe import Reader

        if self.bucket is None:
            return Reader(self.url)
        return Reader(f"{self.bucket}/nightly", Moto.filesystem())


def environment(password: bool) -> dict[str, str]:
    """The child's environment: ours without proxies, the fake's token (or, for the IAM
    password method, the password), the store's keys."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()
           and not k.startswith(("CPH_", "HUAWEICLOUD_", "AWS_"))}
    secret = {"CPH_IAM_PASSWORD": PASSWORD} if password else {"CPH_AUTH_TOKEN": TOKEN}
    return {**env, **secret, **S3_KEYS}


def run_args(world: World, url: str, output: Output, work: Path, date: str) -> list[str]:
    """``run`` with the scenario's settings against the fake at ``url``."""
    s, night = world.scenario, world.night
    args = ["run", "--endpoint", url, "--output", output.url, *output.args,
            "--snapshot-date", date, "--chunk-images", str(s.chunk_images),
            "--concurrency", str(s.concurrency), "--max-attempts", str(s.max_attempts),
            "--rate-limit", "2000", "--backoff-base", "0.02", "--backoff-cap", "0.2",
            "--progress-interval", "3600"]
    if night.retry_budget is not None:
        args += ["--retry-budget", str(night.retry_budget)]
    if night.iam_hiccup:
        args += ["--auth", "password", "--iam-user", IAM_USER[1], "--iam-domain", IAM_USER[0],
                 "--iam-endpoint", url]
    if s.discover:
        args += ["--discover"]
        if s.iam_projects:
            args += ["--region", "cn-north-4", "--iam-endpoint", url]
        else:
            args += ["--project-id", ",".join(world.listed_projects())]
        return args
    rows = world.input_rows()
    projects = {p for p, _ in rows}
    path = work / f"ids-{world.index}.csv"
    if len(projects) == 1:  # one project: a text file and --project-id
        path = path.with_suffix(".txt")
        path.write_text("".join(f"{i}\n" for _, i in rows), encoding="utf-8")
        return [*args, "--input", str(path), "--project-id", rows[0][0]]
    path.write_text("project_id,image_id\n" + "".join(f"{p},{i}\n" for p, i in rows),
                    encoding="utf-8")
    return [*args, "--input", str(path)]


def publish_args(output: Output, date: str, shards: int) -> list[str]:
    return ["publish", "--output", output.url, *output.args, "--snapshot-date", date,
            "--shards", str(shards)]


def execute(steps: list[Step], env: dict[str, str]) -> list[Done]:
    """Start the steps at their delays, signal them at their moments, wait for all."""
    began = time.monotonic()
    pending = sorted(steps, key=lambda s: s.delay)
    running: list[tuple[Step, subprocess.Popen[str], float, list[bool], Any, Any]] = []
    done: list[Done] = []
    with contextlib.ExitStack() as files:
        while pending or running:
            while pending and time.monotonic() - began >= pending[0].delay:
                step = pending.pop(0)
                out, err = (files.enter_context(tempfile.TemporaryFile("w+")) for _ in "oe")
                extra = ["--metrics-file", str(step.metrics)] if step.metrics else []
                child = subprocess.Popen([sys.executable, "-m", "collector", *step.args, *extra],
                                         env=env, stdout=out, stderr=err, text=True)
                running.append((step, child, time.monotonic(), [False], out, err))
            for item in list(running):
                step, child, started, signalled, out, err = item
                age = time.monotonic() - started
                if step.kill is not None and not signalled[0] and age >= step.kill[1] \
                        and child.poll() is None:
                    child.send_signal(step.kill[0])
                    signalled[0] = True
                if child.poll() is None and age > STEP_TIMEOUT:
                    child.kill()
                if child.poll() is not None:
                    out.seek(0)
                    err.seek(0)
                    done.append(Done(step, child.returncode, out.read(), err.read(),
                                     signalled[0], round(age, 2)))
                    running.remove(item)
            time.sleep(0.02)
    return done


def act_out(scenario: Scenario, index: int, output: Output, work: Path) -> NightRun:
    """Night ``index``: its fake, then its commands in their interleaving."""
    world = World(scenario, index)
    night = world.night
    timing = random.Random(f"{scenario.seed}:timing:{index}")
    config = ServerConfig(tokens=(TOKEN,), fault_rates=dict(night.rates), script=world.script(),
                          seed=world.fault_seed, iam_users={"/".join(IAM_USER): PASSWORD},
                          record=True)
    env = environment(night.iam_hiccup)
    result = NightRun()
    if night.relapse:  # the backend down (every answer 503), then up again at the same URL
        sick = FakeThread(world.dataset, replace(config, fault_rates={"http_503": 1.0},
                                                 script={}))
        base = run_args(world, sick.url, output, work, night.date)
        try:
            _phase([Step("sick run", "sick", base, kill=(signal.SIGTERM, night.relapse),
                         metrics=work / f"metrics-{index}-sick.prom")], env, result)
        finally:
            sick.close()
        fake = FakeThread(world.dataset, config, port=int(sick.url.rsplit(":", 1)[1]))
    else:
        fake = FakeThread(world.dataset, config)
        base = run_args(world, fake.url, output, work, night.date)
    try:
        kill = None if night.kill is None else (
            getattr(signal, night.kill.signal), night.kill.after)

        def killed_if(role: str) -> tuple[int, float] | None:
            return kill if night.kill is not None and night.kill.role == role else None

        def metrics(name: str) -> Path:
            return work / f"metrics-{index}-{name.replace(' ', '_').replace('/', '-')}.prom"

        if not night.shards:
            _until_done([Step("run", "run", base, kill=killed_if("run"), metrics=metrics("run"))],
                        env, result)
        else:
            count = night.shards
            if scenario.discover:
                plan = ["plan", *base[1:]]
                _until_done([Step("plan", "plan", plan, kill=killed_if("plan"))], env, result)
            shards = [Step(f"shard {k}/{count}", "shard", [*base, "--shard", f"{k}/{count}"],
                           delay=round(timing.uniform(0, 1.5), 2), metrics=metrics(f"s{k}"))
                      for k in range(1, count + 1)]
            if killed_if("shard") is not None:
                shards[timing.randrange(count - 1)].kill = kill
            first = shards[:-1]
            if night.other_date:
                other = [a if a != night.date else OTHER_DATE for a in base]
                first.append(Step(f"run {OTHER_DATE}", "other", other,
                                  delay=round(timing.uniform(0, 1.5), 2),
                                  metrics=metrics("other")))
            if night.premature_publish:
                first.append(Step("premature publish", "premature",
                                  publish_args(output, night.date, count),
                                  delay=round(timing.uniform(0.2, 2.0), 2)))
            again = _phase(first, env, result)
            _until_done([shards[-1], *again], env, result)
            publish = Step("publish", "publish", publish_args(output, night.date, count),
                           kill=killed_if("publish"))
            for _ in range(RERUNS + 1):
                _until_done([publish], env, result)
                # "shard K/N has not finished (run it again with the same arguments)": do so
                told = re.search(r"shard (\d+)/\d+ has not finished", result.done[-1].stderr)
                if result.done[-1].code != 3 or told is None:
                    break
                shard = shards[int(told.group(1)) - 1]
                _until_done([Step(shard.name, shard.role, shard.args, metrics=shard.metrics)],
                            env, result)
                publish = Step("publish", "publish", publish.args)
        result.requested = fake.requested()
    finally:
        fake.close()
    return result


def _phase(steps: list[Step], env: dict[str, str], result: NightRun) -> list[Step]:
    """Run ``steps`` together; the ones to run again (signalled, or refused the output lock),
    as the README prescribes: the same command, without the signal."""
    done = execute(steps, env)
    result.done += done
    return [Step(d.step.name, d.step.role, d.step.args, metrics=d.step.metrics)
            for d in done if d.step.role != "premature" and (d.killed or d.refused)]


def _until_done(steps: list[Step], env: dict[str, str], result: NightRun) -> None:
    for _ in range(RERUNS + 1):
        steps = _phase(steps, env, result)
        if not steps:
            return
