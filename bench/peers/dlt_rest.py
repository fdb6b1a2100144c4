"""Peer: dlt's ``rest_api`` source, as its documentation sets up a parent/child API.

A parent resource yields the image IDs from the input file; the child ``members`` resource
resolves ``{image_id}`` from it, selects ``members`` and writes Parquet with the filesystem
destination. Defaults otherwise (dlt requests one child page at a time).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")  # loopback only: no telemetry

import dlt  # after the telemetry switch
from dlt.sources.rest_api import rest_api_source


def main(args: argparse.Namespace) -> None:
    ids = Path(args.input).read_text().split()

    @dlt.resource(name="images", selected=False)
    def images() -> Iterator[list[dict[str, str]]]:
        for start in range(0, len(ids), 1000):  # pages, as a parent API would give them
            yield [{"image_id": image_id} for image_id in ids[start:start + 1000]]

    source = rest_api_source({
        "client": {
            "base_url": f"{args.endpoint}/v1/{args.project_id}/",
            "auth": {"type": "api_key", "name": "X-Auth-Token", "location": "header",
                     "api_key": os.environ["CPH_AUTH_TOKEN"]},
            "paginator": "single_page",
        },
        "resources": [images, {
            "name": "members",
            "endpoint": {
                "path": "cloud-phone/images/{image_id}/members",
                "params": {"image_id": {"type": "resolve", "resource": "images",
                                        "field": "image_id"}},
                "data_selector": "members",
            },
        }],
    })
    with tempfile.TemporaryDirectory() as work:
        pipeline = dlt.pipeline(
            pipeline_name="cph_bench", pipelines_dir=work, dataset_name="cph",
            destination=dlt.destinations.filesystem(bucket_url=Path(args.output).as_uri()))
        pipeline.run(source, loader_file_format="parquet")
        rows = pipeline.last_trace.last_normalize_info.row_counts.get("members", 0)
    print(f"dlt: {len(ids)} images, {rows} member rows")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    for name in ("--input", "--project-id", "--endpoint", "--output"):
        parser.add_argument(name, required=True)
    main(parser.parse_args())
