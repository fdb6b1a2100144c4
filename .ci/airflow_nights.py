"""The Airflow DAG in real Apache Airflow (``airflow dags test``), three nights against the fake
CPH server and moto's S3 server on loopback, the DAG file unchanged (its obs:// URLs reach moto
through CPH_STORAGE_ENDPOINT, its API calls the fake through CPH_ENDPOINT). The nights are
after the DAG's start_date (Airflow 2 makes no tasks for a run before it) and before today
(Airflow 2's ``tasks test`` refuses a future date), each a manual run at its 02:00
(``scheduled``):

1. a clean night publishes, exit 0, the DAG run succeeds;
2. a night with a forbidden project publishes, the publish task reports exit 1;
3. a night with a new share to an untrusted project fails the DAG run (exit 4), and a retry of
   the publish (``airflow tasks test``) fails again with exit 4.

    python .ci/airflow_nights.py AIRFLOW_BIN_DIR    (run with the project's own Python)
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import pyarrow.fs as pafs

ROOT = Path(__file__).resolve().parents[1]
KEYS = {"AWS_ACCESS_KEY_ID": "ci-key", "AWS_SECRET_ACCESS_KEY": "ci-secret-5a1f"}
TOKEN = "ci-airflow-token"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scheduled(night: str) -> str:
    """The logical date of ``night``'s run as ``dags test`` makes it: a manual run at the
    02:00 it is scheduled for. Its data interval ends then on Airflow 2 (the interval that
    ends at or before a manual run) and on Airflow 3 alike, as a scheduled run's does."""
    return f"{night}T02:00:00+00:00"


def main(airflow_bin: Path) -> int:
    work = Path(tempfile.mkdtemp(prefix="cph-airflow-"))
    port = free_port()
    moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    fs = pafs.S3FileSystem(access_key=KEYS["AWS_ACCESS_KEY_ID"],
                           secret_key=KEYS["AWS_SECRET_ACCESS_KEY"], region="us-east-1",
                           endpoint_override=f"http://127.0.0.1:{port}",
                           allow_bucket_creation=True)
    for _ in range(100):
        try:
            fs.create_dir("cph-data")
            break
        except OSError:
            time.sleep(0.1)
    home = work / "airflow"
    env = {**os.environ, **KEYS, "AIRFLOW_HOME": str(home),
           "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "deploy" / "airflow"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "CPH_AIRFLOW_RETRY_DELAY": "2",
           "CPH_AUTH_TOKEN": TOKEN,
           "CPH_STORAGE_ENDPOINT": f"http://127.0.0.1:{port}", "CPH_STORAGE_ADDRESSING": "path",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    failures = []
    try:
        subprocess.run([str(airflow_bin / "airflow"), "db", "migrate"], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
        for day, account_day, forbidden, want in (("2026-12-01", 0, False, 0),
                                                  ("2026-12-02", 0, True, 1),
                                                  ("2026-12-03", 1, False, 4)):
            got = night(airflow_bin, env, fs, work, day, account_day, forbidden)
            print(f"airflow night {day}: published with exit {got[0]}, failed tasks reported "
                  f"{got[1]}, dag run {got[2]}", flush=True)
            if got != (want, [want] if want else [], "success" if want == 0 else "failed"):
                failures.append(f"{day}: {got}; want exit {want}")
        retry = subprocess.run([str(airflow_bin / "airflow"), "tasks", "test", "cph_collector",
                                "publish", scheduled("2026-12-03")],
                               env=env, capture_output=True,
                               text=True, timeout=600)
        said = re.findall(r"(?:non-zero exit code|exited with return code) (\d+)",
                          retry.stdout + retry.stderr)  # Airflow 3's words, Airflow 2's
        code = said[-1] if said else None
        print(f"airflow retry of the 2026-12-03 publish: exit {code}")
        if code != "4":
            failures.append("the retried publish did not fail again with exit 4")
    finally:
        moto.terminate()
        moto.wait()
    for failure in failures:
        print(f"FAILED airflow: {failure}")
    print(f"{3 + 1 - len(failures)} passed, {len(failures)} failed")
    return 1 if failures else 0


def night(airflow_bin: Path, env: dict[str, str], fs: pafs.S3FileSystem, work: Path,
          day: str, account_day: int, forbidden: bool) -> tuple[int | None, list[int], str]:
    """One ``airflow dags test`` against a fake server of the account on ``account_day``:
    the publish's exit code from its manifest, the exit codes the failed tasks reported (every
    try: Airflow retries the publish), the DAG run's state."""
    ids = work / f"ids-{day}.csv"
    fake = subprocess.Popen([sys.executable, "-m", "collector", "fake-server", "--port", "0",
                             "--images", "30", "--day", str(account_day), "--ids-file",
                             str(ids)], env={**env, "CPH_AUTH_TOKEN": TOKEN},
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert fake.stdout is not None
        url = None
        while url is None:
            line = fake.stdout.readline()
            if not line:
                raise RuntimeError("the fake server did not start")
            found = re.search(r"listening on (\S+)", line)
            url = found.group(1) if found else None
        while not ids.exists():
            time.sleep(0.05)
        time.sleep(0.2)
        text = ids.read_text()
        if forbidden:  # an image of a project these credentials may not read
            text += "ffffffffffffffffffffffffffffffff,4d8f2a6a5e3c4b1e9f7a0c2d4e6f8a1b\n"
        with fs.open_output_stream("cph-data/ids.csv") as out:
            out.write(text.encode())
        run = subprocess.run([str(airflow_bin / "airflow"), "dags", "test", "cph_collector",
                              scheduled(day)],
                             env={**env, "CPH_ENDPOINT": url}, capture_output=True,
                             text=True, timeout=900)
    finally:
        fake.terminate()
        fake.wait()
    log = run.stdout + run.stderr
    (work / f"airflow-{day}.log").write_text(log)
    state = re.findall(r"state=(success|failed)", log)
    codes = []
    for info in fs.get_file_info(pafs.FileSelector("cph-data/nightly/runs",
                                                   allow_not_found=True)):
        with fs.open_input_stream(info.path) as stream:
            doc = orjson.loads(stream.read())
        if doc.get("snapshot_date") == day and doc.get("status") == "finished":
            codes.append(doc.get("exit_code"))
    reported = sorted({int(c) for c in re.findall(r"non-zero exit code (\d+)", log)})
    return ((codes[0] if len(codes) == 1 else None), reported,
            state[-1] if state else f"unknown (see {work}/airflow-{day}.log)")


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
