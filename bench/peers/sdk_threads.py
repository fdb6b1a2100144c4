"""Peer: the official Python SDK (huaweicloudsdkcph), a sync client shared by 32 threads.

The SDK has no X-Auth-Token credential; this is the 10-line subclass from cph-api.md 6.1.
"""

from __future__ import annotations

import argparse
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.http.http_config import HttpConfig
from huaweicloudsdkcore.signer.signer import Signer
from huaweicloudsdkcph.v1 import CphClient, ListImageMembersRequest


class TokenCredentials(BasicCredentials):  # type: ignore[misc]
    def __init__(self, token: str, project_id: str) -> None:
        super().__init__("unused", "unused", project_id)
        self._token = token

    def sign_request(self, request):  # type: ignore[no-untyped-def]
        request.header_params["X-Auth-Token"] = self._token
        Signer.process_request_uri(request)
        return request


def main(args: argparse.Namespace) -> None:
    ids = Path(args.input).read_text().split()
    config = HttpConfig.get_default_config()
    config.timeout = (5, 30)
    client = (CphClient.new_builder()
              .with_credentials(BasicCredentials("unused", "unused", args.project_id))
              .with_http_config(config).with_endpoint(args.endpoint).build())
    client.with_credentials(TokenCredentials(os.environ["CPH_AUTH_TOKEN"], args.project_id))

    def one(image_id: str) -> list[dict[str, object]]:
        response = client.list_image_members(ListImageMembersRequest(image_id=image_id))
        return [m.to_dict() for m in response.members or []]

    with ThreadPoolExecutor(32) as pool:
        rows = [row for members in pool.map(one, ids) for row in members]
    table = pa.Table.from_pylist(rows)
    pq.write_table(table, args.output, compression="zstd")
    print(f"sdk: {len(ids)} images, {table.num_rows} member rows")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    for name in ("--input", "--project-id", "--endpoint", "--output"):
        parser.add_argument(name, required=True)
    main(parser.parse_args())
