"""The module map, enforced: each module imports only modules of lower layers, and the fake
server stays apart from the collector it fakes an API for."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "collector"
LAYERS = [
    # values, clock and rules with no collector imports
    {"errors", "clock", "ids", "endpoint", "files", "limiter", "loop", "signer",
     "staging", "nightcodes", "concurrency"},  # ...; the staging states and their names;
    # every task, queue and thread of a run
    {"secrets", "sharediff"},  # redaction and escaping: every text we keep or print from
    # elsewhere; the change table's rows, matched over the coded nights
    {"storefaults"},  # a storage error as values, and the retry of store calls
    {"api", "inputs", "progress", "conclude", "changes", "store", "shards",
     "lease_disk"},  # rules over values; where the output lives (disk or bucket); flocks
    {"proxy", "intake", "manifest", "results", "logs", "lease_bucket",
     "schemas"},  # ...; bucket leases; the tables' schemas, the column builder, Parquet files
    {"kinds"},  # how a setting's text becomes its value
    {"metrics", "lease", "chunks", "published", "observe", "specs"},  # the run as Prometheus
    # metrics; every setting declared once; who may write, alive; a chunk's rows; what is
    # published, read back; the summary and progress lines
    {"groups"},  # the settings as frozen value objects, one per concern
    {"config", "client", "feed", "hygiene"},  # settings; the HTTP pool (transport only); the
    # read-ahead; finishing interrupted publishes and removing dead runs' staging
    {"retry", "sink"},  # the retry policy; Parquet staged and published
    {"auth", "listing", "ending"},  # credentials (IAM's token requests follow the retry
    # policy); what discovery lists, as data; how a snapshot ends (its record, counts,
    # verdict and exit code, manifest and metrics)
    {"fetch"},  # one image
    {"collect", "outdir", "preflight", "build", "publish", "diff", "report"},  # tasks and
    # queues; the output; the wiring; what publishing adds; the diff command; the morning
    # report (a package: its model and its page)
    {"discover", "merge", "tables", "finish"},  # listing the projects and images, region by
    # region; a run's last step (fail, publish or stage its share);
    # shards published as one snapshot; the published tables as a notebook reads them
    {"night", "sources"},  # a shard that publishes its night once every shard is staged;
    # where a run's images come from (an input file, discovery, a plan's share)
    {"pipeline"},  # the run as steps
    {"check"},  # the checks a run makes, and one request of each kind
    {"demo"},
    {"cli"},
    {"__main__"},  # python -m collector
]
FAKE_MAY_USE = {"errors", "loop", "signer"}  # the signer is the spec the fake gateway checks


def imports(path: Path) -> set[str]:
    """The ``collector`` modules a file imports, as names relative to the package."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("collector"):
            if node.module == "collector":
                found |= {alias.name for alias in node.names}
            else:
                found.add(node.module.removeprefix("collector."))
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("collector.") for a in node.names
                      if a.name.startswith("collector.")}
    return found


PACKAGES = {"report"}  # small subpackages: a layer as one module


def test_every_module_has_a_layer() -> None:
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert modules | PACKAGES == set().union(*LAYERS)


def test_each_module_imports_only_lower_layers() -> None:
    layer_of = {module: n for n, layer in enumerate(LAYERS) for module in layer}
    wrong = []
    files = [(path.stem, path) for path in PACKAGE.glob("*.py")]
    files += [(package, path) for package in PACKAGES
              for path in (PACKAGE / package).glob("*.py")]
    for stem, path in files:
        if stem == "__init__":
            continue
        for used in imports(path):
            top = used.split(".")[0]
            if top == stem and stem in PACKAGES:
                continue  # within the package
            if top == "fake":
                if stem not in {"demo", "cli"}:
                    wrong.append(f"{stem} imports the fake server ({used})")
            elif layer_of[top] >= layer_of[stem]:
                wrong.append(f"{stem} (layer {layer_of[stem]}) imports {used} "
                             f"(layer {layer_of[top]})")
    assert wrong == []


def test_the_fake_server_uses_nothing_of_the_collector_but_the_signature_rules() -> None:
    wrong = [f"fake.{path.stem} imports {used}"
             for path in (PACKAGE / "fake").glob("*.py") for used in imports(path)
             if not used.startswith("fake") and used not in FAKE_MAY_USE]
    assert wrong == []


def test_the_module_map_in_the_docs_names_every_module_in_its_layer() -> None:
    text = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    mapped = {(int(layer), module) for layer, module in
              re.findall(r"^\| (\d+) \| \[`(\w+)`\]", text, re.M)}
    assert mapped == {(n, module) for n, layer in enumerate(LAYERS) for module in layer}
