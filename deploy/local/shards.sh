#!/bin/sh
# Three shards side by side on one big host, then the publish (GNU parallel works the same:
# parallel cph-collector run ... --shard {}/3 ::: 1 2 3). Credentials come from the environment.
# A shard that exits 1 (some images failed) has still staged its share: the publish decides,
# and exits 3 naming any shard that did not finish.
DAY="$(date -u +%F)"
seq 1 3 | xargs -P 3 -I {} cph-collector run --input ids.csv --project-id 0c4a57e3e7c04c3ab2a6d07fe49b8a96 --region cn-north-4 --output output --snapshot-date "$DAY" --shard {}/3
exec cph-collector publish --output output --shards 3 --snapshot-date "$DAY"
