"""``cph-collector``: parse options, set up logging, call one function, exit with its code.

    cph-collector run --input ids.txt --project-id P --endpoint URL [--output DIR] ...
    cph-collector diff --output DIR --from D1 --to D2 [--format table|csv|jsonl]
    cph-collector report --output DIR [--snapshot-date D] [--nights 30]
    cph-collector demo
    cph-collector fake-server --port 8080 --images 1000 --ids-file ids.txt
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from collector import loop
from collector.config import SPECS, Settings, env_name, load_settings
from collector.errors import (
    CollectorError,
    ExitCode,
    FatalRunError,
    LockHeld,
    RunStatus,
    UsageError,
)
from collector.logs import Format, final_line, json_line, setup_logging

log = logging.getLogger("collector")


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("settings (also CPH_<NAME> or --config FILE)")
    defaults = Settings().flat()
    for name, spec in SPECS.items():
        switch = isinstance(defaults[name], bool)  # --discover alone means true
        group.add_argument("--" + name.replace("_", "-"), dest=name, default=None,
                           metavar=name.split("_")[-1].upper(), nargs="?" if switch else None,
                           const="true" if switch else None,
                           help=f"{spec.help} [{env_name(name)}]")


def _add_some_flags(parser: argparse.ArgumentParser, names: tuple[str, ...]) -> None:
    """Flags for the settings a command other than ``run`` reads (env and TOML as for run)."""
    for name in names:
        switch = name == "fail_on_untrusted"
        parser.add_argument("--" + name.replace("_", "-"), dest=name, default=None,
                            nargs="?" if switch else None, const="true" if switch else None,
                            help=f"{SPECS[name].help} [{env_name(name)}]")


PUBLISH_SETTINGS = ("output", "storage_endpoint", "storage_addressing", "region",
                    "trusted_projects", "fail_on_untrusted", "max_failed_share", "log_format",
                    "metrics_file", "pushgateway")
DIFF_SETTINGS = ("storage_endpoint", "storage_addressing", "region", "log_format")


def build_parser() -> argparse.ArgumentParser:
    """The command line: ``run``, ``plan``, ``check``, ``publish``, ``diff``, ``demo`` and
    ``fake-server``; every setting is a flag of ``run``."""
    parser = argparse.ArgumentParser(
        prog="cph-collector",
        description="Which projects is each Huawei Cloud CPH image shared with? Collects "
                    "ListImageMembers for many image IDs into Parquet.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text, has_input in (
            ("run", "collect image members for the IDs in --input", True),
            ("plan", "list a --discover run's images once, for its shards to collect (then "
                     "run --shard K/N --discover and publish --shards N)", False),
            ("check", "check settings, input, output, credentials and endpoint as a run "
                      "would, then exit (nothing is collected)", True)):
        command = commands.add_parser(name, help=text)
        if has_input:
            command.add_argument("--input", default=None,
                                 help="IDs: .txt (one per line), .csv/.jsonl/.parquet with "
                                      "image_id [and project_id], or - for stdin; or "
                                      "--discover instead")
        command.add_argument("--config", type=Path, help="TOML file of settings (see config/)")
        _add_setting_flags(command)
    _add_publish(commands)
    _add_demo(commands)
    _add_diff(commands)
    _add_report(commands)
    fake = commands.add_parser(
        "fake-server", help="serve a fake CPH API on loopback (token: CPH_AUTH_TOKEN, "
                            "default 'fake-token')")
    from collector.fake.cli import add_arguments

    add_arguments(fake)
    return parser


Commands = Any  # argparse's _SubParsersAction, private in typeshed


def _add_publish(commands: Commands) -> None:
    publish = commands.add_parser("publish", help="publish the N shards of a snapshot date as "
                                                   "one snapshot (after every shard finished)")
    publish.add_argument("--snapshot-date", required=True, metavar="DATE",
                         help="the shards' snapshot date, YYYY-MM-DD")
    publish.add_argument("--shards", required=True, type=int, metavar="N",
                         help="how many shards ran")
    publish.add_argument("--config", type=Path, help="TOML file of settings (see config/)")
    _add_some_flags(publish, PUBLISH_SETTINGS)


def _add_demo(commands: Commands) -> None:
    demo = commands.add_parser("demo", help="run a whole collection against a local fake CPH")
    demo.add_argument("--output", default="output",
                      help="output folder, or s3://bucket/prefix (with --with-s3, or your own "
                           "bucket: AWS_* variables and CPH_STORAGE_ENDPOINT)")
    demo.add_argument("--with-s3", action="store_true",
                      help="start an S3 server (moto) on loopback and write the demo there")
    demo.add_argument("--images", type=int, default=20_000,
                      help="images in the fake account, over the two nights")
    demo.add_argument("--seed", type=int, default=7, help="dataset and fault seed")


def _add_reader_flags(parser: argparse.ArgumentParser) -> None:
    """The options of the commands that only read published snapshots (diff, report)."""
    parser.add_argument("--output", default="output",
                        help="output folder, or s3://bucket/prefix or obs://bucket/prefix")
    _add_some_flags(parser, DIFF_SETTINGS)


def _add_diff(commands: Commands) -> None:
    diff = commands.add_parser("diff", help="what changed between two finished snapshots "
                                             "(nothing is collected)")
    _add_reader_flags(diff)
    diff.add_argument("--from", dest="since", required=True, metavar="DATE",
                      help="the earlier snapshot date, YYYY-MM-DD")
    diff.add_argument("--to", dest="until", required=True, metavar="DATE",
                      help="the later snapshot date, YYYY-MM-DD")
    diff.add_argument("--format", choices=("table", "csv", "jsonl"), default=None,
                      help="table (the default on a terminal), csv (the default otherwise), "
                           "jsonl")
    diff.add_argument("--trusted-projects", default=None, metavar="IDS",
                      help="partner projects (comma-separated or @FILE) [CPH_TRUSTED_PROJECTS]")
    diff.add_argument("--fail-on-untrusted", action="store_true",
                      help="exit 4 when a share to an untrusted project was added or updated")


def _add_report(commands: Commands) -> None:
    report = commands.add_parser("report", help="write the morning report of a published "
                                                 "snapshot: one self-contained HTML page")
    _add_reader_flags(report)
    report.add_argument("--snapshot-date", default=None, metavar="DATE",
                        help="the snapshot, YYYY-MM-DD (default: the latest published)")
    report.add_argument("--nights", type=int, default=30, metavar="N",
                        help="nights in the trends (default 30)")
    report.add_argument("--older-than", type=int, default=365, metavar="DAYS",
                        help="shares older than this are listed (default 365)")


def _run(args: argparse.Namespace) -> int:
    from collector.build import build
    from collector.pipeline import Run, summary_json, summary_line

    flags = {name: getattr(args, name) for name in SPECS}
    settings: Settings = load_settings(flags, os.environ, args.config)
    setup_logging(settings.observe.log_level, settings.observe.log_format)
    given = getattr(args, "input", None)
    if settings.source.discover == (given is not None):
        raise UsageError("--input FILE or --discover: give exactly one (the IDs from a file, "
                         "or listed from the API)")
    run = Run(settings, given, build(settings, os.environ), plan=args.command == "plan")
    # The ~300,000 objects of the imports are never garbage; frozen, a full collection does not
    # rescan them: a 20-30 ms pause of the event loop becomes ~1 ms, and bursts go with it.
    gc.freeze()
    try:
        record = loop.run(run.execute())
    finally:
        if run.record.exit_code is not None:
            print(summary_json(run.record) if settings.observe.log_format == "json"
                  else summary_line(run.record), flush=True)
    if record.status == RunStatus.FINISHED and settings.observe.log_format == "text":
        tables = ("members", "image_status", "images", "listing_status") \
            if settings.source.discover else ("members", "image_status")
        print(f"output: {', '.join(f'{settings.output.location}/{t}' for t in tables)}; "
              f"manifest {settings.output.location}/runs/{record.run_id}.json", flush=True)
    assert record.exit_code is not None
    exit_code = record.exit_code
    if run.night is not None:  # this shard published the night, or found it published
        print(summary_json(run.night.record) if settings.observe.log_format == "json"
              else summary_line(run.night.record), flush=True)
        exit_code = run.night.exit_code
    if run.input_still_reading:
        # A thread is blocked reading stdin, holding its lock: the interpreter's own shutdown
        # would wait for the pipe or abort on that lock. Everything is written; leave now.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(exit_code)
    return exit_code


def _check(args: argparse.Namespace) -> int:
    from collector.check import run_checks

    flags = {name: getattr(args, name) for name in SPECS}
    settings: Settings = load_settings(flags, os.environ, args.config)
    setup_logging(settings.observe.log_level, settings.observe.log_format)
    if settings.source.discover == (args.input is not None):
        raise UsageError("--input FILE or --discover: give exactly one (the IDs from a file, "
                         "or listed from the API)")
    return loop.run(run_checks(settings, args.input, os.environ,
                               out=lambda line: print(line, flush=True)))


def _publish(args: argparse.Namespace) -> int:
    import datetime as dt

    from collector.build import open_store
    from collector.logs import RunId
    from collector.manifest import newest_success
    from collector.merge import publish_shards
    from collector.outdir import lock
    from collector.pipeline import emit_metrics, new_run_id, summary_json, summary_line
    from collector.store import reason

    settings = load_settings({n: getattr(args, n) for n in PUBLISH_SETTINGS}, os.environ,
                             args.config)
    setup_logging(settings.observe.log_level, settings.observe.log_format)
    try:
        day = dt.date.fromisoformat(args.snapshot_date)
    except ValueError:
        raise UsageError(f"--snapshot-date={args.snapshot_date!r}: must be a date "
                         "YYYY-MM-DD") from None
    if not 1 <= args.shards <= 10_000:
        raise UsageError(f"--shards={args.shards}: must be 1 to 10,000")
    store = open_store(settings, settings.output.location)
    run_id = new_run_id(dt.datetime.now(dt.UTC))
    RunId.current = run_id  # in every log line of the JSON format, as a run's
    try:
        with lock(store, run_id):
            record = publish_shards(store, day, args.shards, run_id, settings.trust.trusted,
                                    settings.public(), settings.trust.fail_on_untrusted,
                                    settings.limits.max_failed_share)
    except LockHeld as held:
        raise held.for_publish(day) from None
    except OSError as exc:
        raise FatalRunError(f"output {store.url}: publish failed ({reason(exc)}); run it "
                            "again to finish it") from None
    print(summary_json(record) if settings.observe.log_format == "json" else summary_line(record),
          flush=True)
    emit_metrics(settings, record, True, newest_success(store))  # the night's, no shard
    assert record.exit_code is not None
    return record.exit_code


def _diff(args: argparse.Namespace) -> int:
    import datetime as dt

    from collector.build import open_store
    from collector.changes import lean_memory
    from collector.diff import changes_between, render, trusted_of

    lean_memory()

    dates = []
    for flag, raw in (("--from", args.since), ("--to", args.until)):
        try:
            dates.append(dt.date.fromisoformat(raw))
        except ValueError:
            raise UsageError(f"{flag}={raw!r}: must be a date YYYY-MM-DD") from None
    if dates[0] > dates[1]:
        raise UsageError(f"--from={args.since} is later than --to={args.until}: give the "
                         "earlier snapshot as --from")
    settings = load_settings({name: getattr(args, name) for name in (
        "output", "trusted_projects", *DIFF_SETTINGS)}, os.environ)
    store = open_store(settings, settings.output.location)
    trusted, whose = trusted_of(store, dates[1], settings.trust.trusted
                                if settings.trust.listed is not None else None)
    table, summary = changes_between(store, dates[0], dates[1], trusted)
    fmt = args.format or ("table" if sys.stdout.isatty() else "csv")
    render(table, fmt, sys.stdout.buffer)
    sys.stdout.flush()
    said = summary.line().replace(f"changes since {dates[0]}",
                                  f"changes from {dates[0]} to {dates[1]}")
    if Format.current == "json":  # one object, the summary last, as a run's
        print(json_line({"event": "summary", "message": said, "trusted": whose}),
              file=sys.stderr)
    else:
        print(f"{said}\n{whose}", file=sys.stderr)
    return int(ExitCode.UNTRUSTED) if args.fail_on_untrusted and summary.untrusted_alerts \
        else int(ExitCode.OK)


def _report(args: argparse.Namespace) -> int:
    import datetime as dt

    from collector.build import open_store
    from collector.changes import lean_memory
    from collector.published import published_dates
    from collector.report import write_report
    from collector.store import reason

    lean_memory()  # it reads whole nights, as diff does
    if not 1 <= args.nights <= 3660 or not 0 <= args.older_than <= 36_600:
        raise UsageError("--nights must be 1 to 3,660 and --older-than 0 to 36,600 days")
    settings = load_settings({name: getattr(args, name) for name in ("output", *DIFF_SETTINGS)},
                             os.environ)
    store = open_store(settings, settings.output.location)
    try:
        if args.snapshot_date is not None:
            day = dt.date.fromisoformat(args.snapshot_date)
        else:
            dates = published_dates(store)
            if not dates:
                raise UsageError(f"output {store.url}: no finished snapshot to report on")
            day = dates[-1]
    except ValueError:
        raise UsageError(f"--snapshot-date={args.snapshot_date!r}: must be a date "
                         "YYYY-MM-DD") from None
    except OSError as exc:
        raise UsageError(f"output {store.url}: cannot be read ({reason(exc)})") from None
    try:
        key = write_report(store, day, args.nights, args.older_than)
    except OSError as exc:
        raise FatalRunError(f"output {store.url}: the report could not be written "
                            f"({reason(exc)})") from None
    print(json_line({"event": "report", "snapshot_date": day.isoformat(),
                     "report": f"{store.url}/{key}"}) if settings.observe.log_format == "json"
          else f"report: {store.url}/{key}", flush=True)
    return int(ExitCode.OK)


def guard_standard_fds() -> set[int]:
    """Put /dev/null on any of fds 0-2 that was closed (cron's ``<&-``), so that no socket or
    file we open takes that number: a library writing to "stderr" would write into it, and
    uvloop aborts. ``sys.stdin`` stays None, so ``--input -`` still says stdin is closed."""
    closed = set()
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            closed.add(fd)
    for fd in sorted(closed):
        null = os.open(os.devnull, os.O_RDWR)
        if null != fd:
            os.dup2(null, fd)
            os.close(null)
    return closed


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, run one command, and turn our errors into one line and their exit code."""
    guard_standard_fds()
    parser = build_parser()
    args = parser.parse_args(argv)
    # the format of the lines on stderr, even for a usage error before the settings are read
    fmt = "json" if (getattr(args, "log_format", None) or os.environ.get(
        "CPH_LOG_FORMAT", "")).strip().lower() == "json" else "text"
    setup_logging("warning", fmt)  # each command sets its own level; until then, warnings
    try:
        if args.command in ("run", "plan"):
            return _run(args)
        if args.command == "diff":
            return _diff(args)
        if args.command == "check":
            return _check(args)
        if args.command == "report":
            return _report(args)
        if args.command == "publish":
            return _publish(args)
        if args.command == "demo":
            from collector.demo import demo

            setup_logging("info")
            output = load_settings({"output": args.output}, {}).output.location
            return demo(output, args.images, args.seed, args.with_s3)
        from collector.fake.cli import serve

        setup_logging("info")
        return serve(args)
    except CollectorError as exc:
        print(final_line(f"error: {exc}"), file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        print(final_line("interrupted", "warning"), file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    except Exception:
        log.exception("internal error; please report it with this traceback")
        return int(ExitCode.FATAL)


if __name__ == "__main__":
    sys.exit(main())
