"""Sizes of the embedded default corpus after processing: documents and bytes per component and split.

    python benchmarks/embedded_corpus.py [--json benchmarks/results/embedded_corpus.json]

Runs (or reuses the cache of) `embedded_mixture.ensure_processed()`, the path README command 1 trains
on, and records its manifest's counts with `host` (benchmarks/host_info.py) and the Python version:
`books` and `github` come from the interpreter's standard library, so the counts follow it.
benchmarks/render_docs.py renders the table of docs/data_input.md from this file.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.host_info import host_info  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", default=os.path.join("benchmarks", "results", "embedded_corpus.json"))
    args = p.parse_args(argv)
    from gopher_jax.data import embedded_corpus, embedded_mixture
    from gopher_jax.data.manifest import read_manifest

    manifest = read_manifest(embedded_mixture.ensure_processed())
    components = {
        name: {split: {"documents": s.documents, "bytes": s.bytes} for split, s in sorted(c.splits.items())}
        for name, c in sorted(manifest.components.items())}
    result = {"host": dict(host_info(), python=platform.python_version()), "corpus_key": embedded_corpus.corpus_key(),
              "components": components}
    with open(args.json, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    print(json.dumps(components))
    return 0


if __name__ == "__main__":
    sys.exit(main())
