"""Connected components of the duplicate graph; one survivor (lowest rank) per component."""
from __future__ import annotations

from typing import Hashable, Iterable


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
