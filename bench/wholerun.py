"""The whole-run checker, as many seeds as asked: each seed draws a configuration (input or
discovery, projects, chunks, concurrency, shards and their interleaving, a folder or a bucket,
faults, a kill and its re-run, one or two nights), runs it through the CLI against the fake
server on loopback, and checks it against the oracle. A failing seed prints the command that
replays it, its configuration and the first violated invariant; a table of what failed ends it.

    python bench/wholerun.py --seeds 300 [--start 1]     # seeds 1..300
    python bench/wholerun.py --seed 1234 [--keep DIR]    # replay one (DIR keeps its output)
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.wholerun import Result, run_seed


def kind(result: Result) -> str:
    """A violation without its numbers, so the table groups seeds by what broke."""
    text = result.violation or ""
    return text.split(":")[0][:70]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1, help="how many seeds to run")
    parser.add_argument("--start", type=int, default=1, help="the first seed of --seeds")
    parser.add_argument("--seed", type=int, default=None, help="replay this one seed")
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep each seed's work folder (inputs, output, metrics) here")
    args = parser.parse_args()
    seeds = [args.seed] if args.seed is not None else list(range(args.start,
                                                                 args.start + args.seeds))
    results: list[Result] = []
    began = time.monotonic()
    for seed in seeds:
        result = run_seed(seed, args.keep)
        results.append(result)
        print(result.report(), flush=True)
    failed = [r for r in results if r.violation]
    print(f"\n{len(results)} seeds in {time.monotonic() - began:.0f} s "
          f"({sum(r.seconds for r in results) / max(len(results), 1):.1f} s a seed); "
          f"{len(failed)} failed")
    if failed:
        print("\n| violation | seeds |\n|---|---|")
        for what, n in Counter(kind(r) for r in failed).most_common():
            which = [str(r.seed) for r in failed if kind(r) == what]
            print(f"| {what} | {n}: {', '.join(which[:12])}{' …' if n > 12 else ''} |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
