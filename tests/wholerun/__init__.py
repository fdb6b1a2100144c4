"""The whole-run checker: seeded nights drawn from the product's feature space, run through the
real CLI against the fake server on loopback, and checked against an oracle computed from the
fake's ground truth (issue 22, Build item 4).

    draw.py     seed -> Scenario (the configuration) and the fake's fault scripts
    oracle.py   pure functions: what a correct run of a Scenario publishes and exits with
    runner.py   the fake (a thread), moto, and the CLI subprocesses in their interleaving
    observe.py  what a reader finds in the output (a folder or a bucket)
    check.py    the observation against the oracle: the first violated invariant

``python bench/wholerun.py --seed S`` replays one seed; ``--seeds N`` runs many.
"""

from tests.wholerun.check import Result, run_seed

__all__ = ["Result", "run_seed"]
