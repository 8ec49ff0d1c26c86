"""Connected components of the duplicate graph; one survivor (lowest rank) per component."""
from __future__ import annotations

import dataclasses
from typing import Hashable, Iterable

import gin


def losers(edges: Iterable[tuple[Hashable, Hashable]]) -> dict[Hashable, Hashable]:
    """Returns {node: survivor of its component} for every node that is not its survivor.

    Nodes are `Doc.rank` strings: the smallest node of each component survives, so the
    result depends only on the edge set, not on the order edges arrive in (Beam == in-process).
    """
    parent: dict = {}

    def find(x):
        root = x
        while parent.get(root, root) != root:
            root = parent[root]
        while parent.get(x, x) != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            # The smaller node becomes the root, so each root is its component's minimum.
            lo, hi = (ra, rb) if ra < rb else (rb, ra)
            parent[hi] = lo
            parent.setdefault(lo, lo)
    return {x: find(x) for x in parent if find(x) != x}


@gin.configurable(module="corpus")
@dataclasses.dataclass(frozen=True)
class BeamComponentsConfig:
    """How the Beam pipeline computes components (beam_components.py); in-process runs ignore it.

    Size num_buckets and num_groups so that nodes/num_buckets and edges/num_groups fit one
    worker comfortably (~10^6-10^7); more only costs smaller shuffle elements.
    """

    num_buckets: int = 256  # node tables: each holds ~ nodes / num_buckets rows
    num_groups: int = 256  # join groups: each holds ~ edges / num_groups edges, hubs included
    # Unrolled large-star + small-star rounds (Beam has no loops). A path whose nodes are in sorted
    # order, the slowest graph family measured, needs log2(length) rounds (2^20 nodes: 20), so
    # 32 covers a duplicate chain through 2^32 documents (MassiveText has 2.35e9 < 2^32). A graph
    # needing more fails the job naming this setting; it never gives a wrong answer.
    max_rounds: int = 32

    def check(self) -> None:
        """Raises ValueError naming a setting that is not a positive int."""
        for name in ("num_buckets", "num_groups", "max_rounds"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"corpus.BeamComponentsConfig.{name}={v!r}: expected an int >= 1")
