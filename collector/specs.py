"""The declarations: every setting once (type, default's home, allowed range, help, group).

``SPECS`` is the one source the TOML file ``config/collector.toml``, the ``CPH_*`` names, the
CLI flags and the README's settings table derive from (``config.render_toml``/``render_table``);
``Spec.group``/``Spec.attr`` say which value object of ``Settings`` holds its parsed value.
"""

from __future__ import annotations

from collector.kinds import (
    ENDPOINT,
    NAME,
    PROXY,
    REGIONS,
    Kind,
    Spec,
    choice,
    date_value,
    flag_value,
    number,
    output_value,
    path_value,
    positive,
    project_id_value,
    prom_value,
    regions_value,
    shard_value,
    spec,
    trusted_value,
    whole,
)
from collector.store import ADDRESSING

INPUT_FORMATS = ("auto", "text", "csv", "jsonl", "parquet")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
AUTH_METHODS = ("auto", "token", "password", "agency", "aksk")
FLAG: Kind = (flag_value, "true or false")
SECONDS = "a number of seconds"

SPECS: dict[str, Spec] = {
    "endpoint": spec(ENDPOINT, "CPH endpoint, e.g. https://cph.cn-north-4.myhuaweicloud.com",
                     "http.endpoint"),
    "region": spec((regions_value, "one or more (comma-separated) of " + ", ".join(REGIONS)),
                   "region: gives the CPH and IAM endpoints unless they are set; several "
                   "only with discover", "http.regions"),
    "project_id": spec((project_id_value, "IDs of letters, digits, - and _, at most 64, "
                                     "comma-separated"),
                       "project for input rows that have no project_id column; with discover, "
                       "the projects to list (else IAM's projects of the region)",
                       "source.project_ids"),
    "discover": spec(FLAG,
                     "list the images from the API (ListImages) instead of reading --input",
                     "source.discover"),
    "trusted_projects": spec((trusted_value, "project IDs, comma-separated, or @FILE with one a "
                                        "line"),
                             "partner projects we expect to share with: their changes are "
                             "trusted", "trust.projects"),
    "fail_on_untrusted": spec(FLAG,
                              "exit 4 (after publishing) when a share to an untrusted project "
                              "was added or updated", "trust.fail_on_untrusted"),
    "output": spec((output_value, "a folder path, s3://bucket/prefix or obs://bucket/prefix"),
                   "output folder or bucket prefix (members/, image_status/, runs/)",
                   "output.location"),
    "storage_endpoint": spec(ENDPOINT, "object storage endpoint; obs:// defaults to "
                                       "https://obs.{region}.myhuaweicloud.com, s3:// to AWS",
                             "output.storage_endpoint"),
    "storage_addressing": spec(choice(ADDRESSING), "bucket addressing: virtual (bucket.host; "
                                                   "OBS needs it), path (host/bucket); auto = "
                                                   "virtual for obs://, path for s3://",
                               "output.storage_addressing"),
    "snapshot_date": spec((date_value, "a date YYYY-MM-DD"),
                          "partition date; empty = the UTC date the run starts",
                          "output.snapshot_date"),
    "input_format": spec(choice(INPUT_FORMATS), "input format; auto = from the file extension",
                         "source.input_format"),
    "rate_limit": spec(positive(100_000),
                       "requests per second, at most, spread evenly (retries included)",
                       "http.rate_limit"),
    "concurrency": spec(whole(1, 1024), "requests in flight, at most", "http.concurrency"),
    "max_attempts": spec(whole(1, 20), "HTTP attempts per image page, the first included",
                         "retry.max_attempts"),
    "backoff_base": spec(positive(60, SECONDS),
                         "first retry waits up to this long (full jitter, doubling)",
                         "retry.backoff_base"),
    "backoff_cap": spec(positive(600, SECONDS), "no backoff wait is longer than this",
                        "retry.backoff_cap"),
    "retry_after_cap": spec(positive(600, SECONDS),
                            "a server's Retry-After is honoured up to this long",
                            "retry.retry_after_cap"),
    "retry_budget": spec(number(0, 10),
                         "retries allowed in the run: 100, plus this many per image finished",
                         "retry.retry_budget"),
    "connect_timeout": spec(positive(300, SECONDS), "seconds to open a connection",
                            "http.connect_timeout"),
    "read_timeout": spec(positive(600, SECONDS),
                         "seconds to wait for an answer to begin, or between two parts of it",
                         "http.read_timeout"),
    "request_timeout": spec(positive(3600, SECONDS), "seconds for one whole request",
                            "http.request_timeout"),
    "max_body_bytes": spec(whole(1024, 104_857_600),
                           "a larger response body is a failure of that image",
                           "http.max_body_bytes"),
    "max_pages": spec(whole(1, 100_000), "more member pages than this fail the image "
                                         "(paging_limit); the API documents at most 10 members",
                      "limits.max_pages"),
    "max_members": spec(whole(1, 10_000_000), "more members than this fail the image "
                                             "(too_many_members)", "limits.max_members"),
    "proxy": spec(PROXY, "HTTP(S) proxy for every request; overrides HTTPS_PROXY/HTTP_PROXY "
                         "(NO_PROXY still applies)", "http.proxy"),
    "chunk_images": spec(whole(1, 10_000_000), "images per committed Parquet chunk",
                         "output.chunk_images"),
    "fail_fast_after": spec(whole(1, 1_000_000),
                            "stop (exit 3) when, before any answer proved the endpoint, this many "
                            "requests got no answer, or 10 times as many no API answer",
                            "limits.fail_fast_after"),
    "max_failed_share": spec(number(0, 1), "publish nothing (exit 3) when more than this share of "
                                           "the night's images, or of its listings, failed; a "
                                           "re-run retries them", "limits.max_failed_share"),
    "progress_interval": spec(positive(3600, SECONDS),
                              "seconds between progress lines when not on a terminal",
                              "observe.progress_interval"),
    "auth": spec(choice(AUTH_METHODS), "credentials: token, password (IAM), agency (IAM "
                                       "assume-role), aksk; auto = from the environment",
                 "auth.method"),
    "token_file": spec((path_value, "a file path"),
                       "file holding the X-Auth-Token (else CPH_AUTH_TOKEN)", "auth.token_file"),
    "iam_endpoint": spec(ENDPOINT, "IAM endpoint for password/agency tokens; default from "
                                   "region", "auth.iam_endpoint"),
    "iam_user": spec(NAME, "IAM user name (auth = password)", "auth.iam_user"),
    "iam_domain": spec(NAME, "account (domain) name of the IAM user", "auth.iam_domain"),
    "agency_name": spec(NAME, "agency to assume (auth = agency)", "auth.agency_name"),
    "agency_domain": spec(NAME, "account (domain) name that owns the agency", "auth.agency_domain"),
    "ca_bundle": spec((path_value, "a file path"),
                      "extra CA certificates (PEM), trusted besides the system's; TLS stays on",
                      "http.ca_bundle"),
    "log_level": spec(choice(LOG_LEVELS), "log verbosity", "observe.log_level"),
    "shard": spec((shard_value, "K/N, e.g. 2/3"),
                  "collect only shard K of N of the images (a stable hash of project and image); "
                  "publish the N shards with cph-collector publish --shards N", "shards.shard"),
    "shards": spec(whole(1, 10_000), "N shards, this one taken from JOB_COMPLETION_INDEX "
                                     "(Kubernetes Indexed Jobs, 0-based)", "shards.count"),
    "publish_when_staged": spec(FLAG,
                                "a shard, once staged, publishes the night when it finds all "
                                "N shards staged (one does; the others say so and exit 0)",
                                "shards.publish_when_staged"),
    "shard_rate": spec(positive(100_000), "requests per second for this shard; default "
                                          "rate_limit / N (the quota is the account's)",
                       "shards.shard_rate"),
    "log_format": spec(choice(LOG_FORMATS), "text, or json: one JSON object a line on stderr "
                                            "(log records and progress), and the summary as "
                                            "one JSON object", "observe.log_format"),
    "metrics_file": spec((prom_value, "a file path ending in .prom"),
                         "Prometheus textfile (node_exporter's textfile collector), rewritten "
                         "at every progress interval and at the end", "observe.metrics_file"),
    "pushgateway": spec(ENDPOINT, "Prometheus Pushgateway URL: the metrics are pushed at the "
                                  "end (a Pushgateway that is down is a warning)",
                        "observe.pushgateway"),
    "report": spec(FLAG,
                   "after publishing, write the morning report (one HTML page) to "
                   "report/snapshot_date=D/index.html in the output", "observe.report"),
}



def env_name(name: str) -> str:
    """The environment variable of a setting: ``CPH_<NAME>``."""
    return "CPH_" + name.upper()
