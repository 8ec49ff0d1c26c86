"""Connected components of the duplicate graph on Beam, with no key holding more than its share.

Algorithm: alternating large-star / small-star (Kiveris et al. 2014, "Connected Components in
MapReduce and Beyond", SoCC). Nodes are totally ordered (ints, or strings such as `Doc.rank`);
every undirected edge is kept once as a row (lo, hi) with lo < hi. With
m(u) = min(u, smaller neighbours of u):

    large-star:  (a, b) -> (m(a), b)
    small-star:  (a, b) -> (m(b), a) unless a == m(b), and (m(b), b)

Neither operation joins two components or splits one; alternated, they turn every component into
a star around its minimum node. A star forest is a fixed point, and the final check recognises
it locally: every node has no smaller neighbour (a root) or exactly one, a root (a leaf). The
leaves with their roots are then exactly `components.losers`' answer (the smallest node of each
component survives), so Beam and in-process runs keep the same survivors by construction.

Distribution, for every round (see docs/decisions/beam_components.md):
- m(u) is a minimum, so it is a lifted CombinePerKey over `num_buckets` node buckets (a hash of
  u): a bucket holds ~nodes/num_buckets rows whatever the degrees.
- m(x) is joined onto the edges in `num_groups` groups keyed by a hash of the *edge*, not of x:
  a hub's edges spread evenly over all groups. Each bucket row is sent only to the groups where
  that node has an edge (the bucket records them), so a group holds ~edges/num_groups edges and
  at most as many rows.
- Elements are numpy batches (one per group, or per (batch, bucket) pair), not single edges.

Beam has no loops, so `max_rounds` rounds are unrolled; the final check fails the job, naming
`corpus.BeamComponentsConfig.max_rounds`, if the graph is not yet a star forest: never a wrong answer.
"""
from __future__ import annotations

import zlib

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from gopher_jax.data.corpus.components import BeamComponentsConfig

LARGE, SMALL = "large", "small"
METRICS_NAMESPACE = "gopher_jax.components"
_U = np.uint64


# ---------------------------------------------------------------------------------------------
# Hashing and order-preserving integer codes (numpy, no Beam)

def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a well-spread uint64 function of uint64 x."""
    x = x ^ (x >> _U(30))
    x = x * _U(0xBF58476D1CE4E5B9)
    x = x ^ (x >> _U(27))
    x = x * _U(0x94D049BB133111EB)
    return x ^ (x >> _U(31))


def node_hash(nodes: np.ndarray) -> np.ndarray:
    """Returns a uint64 hash per node, identical in every worker process (no Python hash())."""
    if nodes.dtype.kind in "iu":
        return _mix(nodes.astype(np.int64).view(_U))
    return _mix(np.fromiter((zlib.crc32(str(s).encode("utf-8")) for s in nodes), _U, len(nodes)))


def edge_group(edges: np.ndarray, num_groups: int) -> np.ndarray:
    """Returns each (lo, hi) edge's join group: a hash of both ends, so a hub's edges spread out."""
    h = _mix(node_hash(edges[:, 0]) ^ _mix(node_hash(edges[:, 1]) + _U(0x9E3779B97F4A7C15)))
    return (h % _U(num_groups)).astype(np.int64)


def node_bucket(nodes: np.ndarray, num_buckets: int) -> np.ndarray:
    """Returns each node's bucket (the key of the node-table combine)."""
    return (node_hash(nodes) % _U(num_buckets)).astype(np.int64)


_CODE_BITS = 31  # codes (and group ids) fit 31 bits, so a pair packs into one sortable int64


def _encode(*arrays: np.ndarray):
    """Returns (values, codes): int64 codes in [0, 2^31) ordered like the nodes; values[codes] gives them back.

    Integer nodes already in that range are their own codes (values None); others (strings,
    big or negative ints) are coded by one sort.
    """
    if all(a.dtype.kind in "iu" for a in arrays):
        if all(a.size == 0 or (a.min() >= 0 and a.max() < 2 ** _CODE_BITS) for a in arrays):
            return None, [a.astype(np.int64) for a in arrays]
        flat = np.concatenate([a.astype(np.int64).ravel() for a in arrays])
    else:
        flat = np.concatenate([np.asarray(a, dtype=object).ravel() for a in arrays])
    values, inverse = np.unique(flat, return_inverse=True)
    inverse = inverse.astype(np.int64).ravel()
    out, start = [], 0
    for a in arrays:
        out.append(inverse[start:start + a.size].reshape(a.shape))
        start += a.size
    return values, out


def _decode(values, codes: np.ndarray) -> np.ndarray:
    return codes if values is None else values[codes]


def _pack(hi_bits: np.ndarray, lo_bits: np.ndarray) -> np.ndarray:
    return (hi_bits << _CODE_BITS) | lo_bits


def _unpack(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return packed >> _CODE_BITS, packed & ((1 << _CODE_BITS) - 1)


def _first_per_key(keys: np.ndarray, vals: np.ndarray, last: bool = False):
    """Returns (unique keys, min of vals per key) for code arrays (the max if last)."""
    k, v = _unpack(np.sort(_pack(keys, vals)))
    if len(k) == 0:
        return k, v
    edge = np.r_[k[1:] != k[:-1], True] if last else np.r_[True, k[1:] != k[:-1]]
    return k[edge], v[edge]


def _sorted_unique(x: np.ndarray) -> np.ndarray:
    # np.unique of numpy 2.4 hashes and is ~100x slower than a sort on 10^6 int64s.
    x = np.sort(x)
    return x[np.r_[True, x[1:] != x[:-1]]] if len(x) else x


def _unique_rows(a: np.ndarray) -> np.ndarray:
    """Returns the distinct rows of a (k, 2) code array, sorted."""
    return np.stack(_unpack(_sorted_unique(_pack(a[:, 0], a[:, 1]))), axis=1) if len(a) else a


def canonical_edges(edges) -> np.ndarray:
    """Returns the distinct (lo, hi) rows, lo < hi, of an (k, 2) array or list of pairs; drops self-loops."""
    edges = np.asarray(edges)
    if edges.dtype.kind not in "iu":
        edges = np.asarray(edges, dtype=object)
    edges = edges.reshape(-1, 2)
    values, (codes,) = _encode(edges)
    codes = np.sort(codes, axis=1)
    codes = _unique_rows(codes[codes[:, 0] != codes[:, 1]])
    return _decode(values, codes)


def _split_by(keys: np.ndarray, *columns: np.ndarray):
    """Yields (key, columns restricted to that key) for each distinct key (small non-negative ints)."""
    # Stable argsort of int16 keys is a radix sort: linear, ~10x faster than a comparison sort.
    order = np.argsort(keys.astype(np.int16) if len(keys) and keys.max() < 2 ** 15 else keys, kind="stable")
    keys = keys[order]
    cols = [c[order] for c in columns]
    bounds = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1], True]) if len(keys) else []
    for s, e in zip(bounds[:-1], bounds[1:]):
        yield int(keys[s]), [c[s:e] for c in cols]


# ---------------------------------------------------------------------------------------------
# One star operation, as three steps that each touch a bounded share of the graph

def node_parts(edges: np.ndarray, op: str, num_buckets: int, num_groups: int, groups: np.ndarray | None = None):
    """Yields (bucket, (min_nodes, min_vals, need_nodes, need_groups)) partial node tables.

    min_*: each node with a smaller neighbour in `edges` and the smallest one (for m(u));
    need_*: the node whose m(.) each edge needs (lo for large-star, hi for small-star) and the
    edge's join group (`groups`, if already computed).
    """
    if len(edges) == 0:
        return
    groups = edge_group(edges, num_groups) if groups is None else groups
    values, (codes,) = _encode(edges)
    lo, hi = codes[:, 0], codes[:, 1]
    min_nodes, min_vals = _first_per_key(hi, lo)
    x = lo if op == LARGE else hi
    need = _unique_rows(np.stack([x, groups], axis=1))
    min_nodes_v, min_vals_v = _decode(values, min_nodes), _decode(values, min_vals)
    need_nodes_v = _decode(values, need[:, 0])
    min_b = node_bucket(min_nodes_v, num_buckets)
    need_b = node_bucket(need_nodes_v, num_buckets)
    parts: dict[int, list] = {}
    for b, (n, v) in _split_by(min_b, min_nodes_v, min_vals_v):
        parts[b] = [n, v, need_nodes_v[:0], need[:0, 1]]
    for b, (n, g) in _split_by(need_b, need_nodes_v, need[:, 1]):
        parts.setdefault(b, [min_nodes_v[:0], min_vals_v[:0], None, None])[2:] = [n, g]
    for b, p in parts.items():
        yield b, tuple(p)


def merge_node_tables(tables) -> tuple:
    """Returns one reduced table from partial ones: min per node, distinct (node, group) needs."""
    tables = list(tables)
    mn = np.concatenate([t[0] for t in tables])
    mv = np.concatenate([t[1] for t in tables])
    nn = np.concatenate([t[2] for t in tables])
    ng = np.concatenate([t[3] for t in tables]).astype(np.int64)
    values, (mn_c, mv_c, nn_c) = _encode(mn, mv, nn)
    mn_c, mv_c = _first_per_key(mn_c, mv_c)
    need = _unique_rows(np.stack([nn_c, ng], axis=1)) if len(nn_c) else np.zeros((0, 2), np.int64)
    return (_decode(values, mn_c), _decode(values, mv_c), _decode(values, need[:, 0]), need[:, 1])


def group_rows(table: tuple, op: str):
    """Yields (group, (nodes, m)) rows: m(x) for each node x to every group where x has an edge.

    Roots (m(x) == x) are left out for large-star: the join treats a missing row as m(x) = x.
    """
    mn, mv, nn, ng = table
    if len(nn) == 0:
        return
    values, (mn_c, mv_c, nn_c) = _encode(mn, mv, nn)
    order = np.argsort(mn_c, kind="stable")
    mn_c, mv_c = mn_c[order], mv_c[order]
    m = nn_c.copy()
    pos = np.searchsorted(mn_c, nn_c)
    found = pos < len(mn_c)
    found[found] = mn_c[pos[found]] == nn_c[found]
    m[found] = mv_c[pos[found]]
    keep = m != nn_c if op == LARGE else np.ones(len(m), bool)
    for g, (x, mx) in _split_by(ng[keep], _decode(values, nn_c[keep]), _decode(values, m[keep])):
        yield g, (x, mx)


def star_join(edge_batches, row_batches, op: str) -> tuple[np.ndarray, int, int]:
    """Applies large- or small-star to one group's edges; returns (new edges, edges in, changed).

    `changed` counts new edges that were not in the input (0 in every group <=> a fixed point).
    """
    edge_batches, row_batches = list(edge_batches), list(row_batches)
    if not edge_batches:
        return None, 0, 0
    edges = np.concatenate(edge_batches)
    rx = np.concatenate([r[0] for r in row_batches]) if row_batches else edges[:0, 0]
    rm = np.concatenate([r[1] for r in row_batches]) if row_batches else edges[:0, 0]
    values, (codes, rx, rm) = _encode(edges, rx, rm)
    codes = _unique_rows(codes)
    lo, hi = codes[:, 0], codes[:, 1]
    order = np.argsort(rx, kind="stable")
    rx, rm = rx[order], rm[order]
    x = lo if op == LARGE else hi
    m = x.copy()
    pos = np.searchsorted(rx, x)
    found = pos < len(rx)
    found[found] = rx[pos[found]] == x[found]
    m[found] = rm[pos[found]]
    if op == LARGE:
        new = np.stack([m, hi], axis=1)
    else:
        if not found.all():
            raise AssertionError("small-star: a node table row is missing (every hi has a smaller neighbour)")
        new = np.concatenate([np.stack([m, lo], axis=1)[lo != m], np.stack([m, hi], axis=1)])
    new = _unique_rows(new)
    changed = len(_unique_rows(np.concatenate([new, codes]))) - len(codes)  # new rows not in the input
    return _decode(values, new), len(codes), changed


# ---------------------------------------------------------------------------------------------
# Final check: a star forest, read off as (leaf, root) rows

def check_parts(edges: np.ndarray, num_buckets: int):
    """Yields (bucket, (small_nodes, min_small, max_small, big_nodes)) partial check tables."""
    if len(edges) == 0:
        return
    values, (codes,) = _encode(edges)
    lo, hi = codes[:, 0], codes[:, 1]
    n, mn = _first_per_key(hi, lo)
    _, mx = _first_per_key(hi, lo, last=True)
    big = _sorted_unique(lo)
    n_v, big_v = _decode(values, n), _decode(values, big)
    parts: dict[int, list] = {}
    for b, (nn, a, z) in _split_by(node_bucket(n_v, num_buckets), n_v, _decode(values, mn), _decode(values, mx)):
        parts[b] = [nn, a, z, big_v[:0]]
    for b, (bb,) in _split_by(node_bucket(big_v, num_buckets), big_v):
        parts.setdefault(b, [n_v[:0], n_v[:0], n_v[:0], None])[3] = bb
    for b, p in parts.items():
        yield b, tuple(p)


def merge_check_tables(tables) -> tuple:
    """Returns one reduced check table: min and max smaller neighbour per node, nodes with a bigger one."""
    tables = list(tables)
    n = np.concatenate([t[0] for t in tables])
    a = np.concatenate([t[1] for t in tables])
    z = np.concatenate([t[2] for t in tables])
    big = np.concatenate([t[3] for t in tables])
    values, (n, a, z, big) = _encode(n, a, z, big)
    nn, a = _first_per_key(n, a)
    _, z = _first_per_key(n, z, last=True)
    big = _sorted_unique(big)
    return _decode(values, nn), _decode(values, a), _decode(values, z), _decode(values, big)


def leaves_of(table: tuple) -> tuple[np.ndarray, int]:
    """Returns ((k, 2) [leaf, root] rows, number of nodes that are neither a root nor a leaf)."""
    n, a, z, big = table
    values, (n, a, z, big) = _encode(n, a, z, big)
    one = a == z  # exactly one distinct smaller neighbour
    middle = np.isin(n, big)  # has smaller and bigger neighbours
    leaf = one & ~middle
    rows = np.stack([n[leaf], a[leaf]], axis=1)
    return _decode(values, rows), int((~leaf).sum())


# ---------------------------------------------------------------------------------------------
# The same steps on one partition (tests; counting the rounds a graph needs)

def components_in_memory(edges, max_rounds: int = 64) -> tuple[np.ndarray, int]:
    """Runs the star operations on one partition until a fixed point.

    Returns ([leaf, root] rows, rounds run until no operation changed the graph). Same steps
    as the Beam transform with one bucket and one group.
    """
    edges = canonical_edges(edges)
    for r in range(max_rounds):
        changed = 0
        for op in (LARGE, SMALL):
            table = merge_node_tables([p for _, p in node_parts(edges, op, 1, 1)]) if len(edges) else None
            rows = [rw for _, rw in group_rows(table, op)] if table is not None else []
            out, _, ch = star_join([edges], rows, op) if len(edges) else (edges, 0, 0)
            edges, changed = out, changed + ch
        if changed == 0:
            break
    else:
        raise RuntimeError(f"no fixed point after {max_rounds} rounds")
    if len(edges) == 0:
        return edges.reshape(0, 2), r
    rows, bad = leaves_of(merge_check_tables([p for _, p in check_parts(edges, 1)]))
    assert bad == 0, bad
    return rows, r


# ---------------------------------------------------------------------------------------------
# Beam transforms

class _TableFn(beam.CombineFn):
    """Lifted combine of partial node tables (or check tables): parts are merged in batches."""

    def __init__(self, merge):
        self.merge = merge

    def create_accumulator(self):
        return []

    def add_input(self, acc, part):
        acc.append(part)
        return [self.merge(acc)] if len(acc) >= 64 else acc

    def merge_accumulators(self, accs):
        parts = [p for a in accs for p in a]
        return [self.merge(parts)] if len(parts) > 1 else parts

    def compact(self, acc):
        return [self.merge(acc)] if len(acc) > 1 else acc

    def extract_output(self, acc):
        return self.merge(acc)


class _ToGroupsAndBuckets(beam.DoFn):
    """Edge batch -> (group, ("e", edges)) per join group, and tagged (bucket, partial node table)."""

    def __init__(self, op: str, config: BeamComponentsConfig):
        self.op, self.config = op, config

    def process(self, edges):
        if len(edges) == 0:
            return
        groups = edge_group(edges, self.config.num_groups)
        for g, (e,) in _split_by(groups, edges):
            yield g, ("e", e)
        for part in node_parts(edges, self.op, self.config.num_buckets, self.config.num_groups, groups):
            yield beam.pvalue.TaggedOutput("parts", part)


def _rows_of_bucket(kv, op: str, metric: str):
    Metrics.distribution(METRICS_NAMESPACE, metric).update(len(kv[1][0]) + len(kv[1][2]))
    for g, rows in group_rows(kv[1], op):
        yield g, ("n", rows)


def _join_group(kv, op: str, metric: str):
    values = list(kv[1])
    new, n_in, changed = star_join([v for t, v in values if t == "e"], [v for t, v in values if t == "n"], op)
    Metrics.distribution(METRICS_NAMESPACE, metric).update(n_in)
    Metrics.counter(METRICS_NAMESPACE, metric.replace("group_edges", "edges")).inc(n_in)
    Metrics.counter(METRICS_NAMESPACE, metric.replace("group_edges", "changed")).inc(changed)
    if new is not None and len(new):
        yield new


class StarOp(beam.PTransform):
    """One large-star or small-star operation on a PCollection of (lo, hi) edge batches."""

    def __init__(self, op: str, round_index: int, config: BeamComponentsConfig):
        super().__init__()
        self.op, self.r, self.config = op, round_index, config

    def expand(self, edges):
        c, op, tag = self.config, self.op, f"r{self.r:02d}_{self.op}"
        keyed = edges | "Split" >> beam.ParDo(_ToGroupsAndBuckets(op, c)).with_outputs("parts", main="edges")
        rows = (keyed.parts
                | "NodeTable" >> beam.CombinePerKey(_TableFn(merge_node_tables))
                | "RowsToGroups" >> beam.FlatMap(_rows_of_bucket, op, f"{tag}_bucket_rows"))
        # A hand-made CoGroupByKey (tagged values, one GroupByKey): fewer stages per operation.
        return ((keyed.edges, rows)
                | "Tagged" >> beam.Flatten()
                | "Join" >> beam.GroupByKey()
                | "Star" >> beam.FlatMap(_join_group, op, f"{tag}_group_edges"))


def _leaves_of_bucket(kv, max_rounds: int):
    rows, bad = leaves_of(kv[1])
    Metrics.distribution(METRICS_NAMESPACE, "check_bucket_nodes").update(len(kv[1][0]) + len(kv[1][3]))
    if bad:
        raise RuntimeError(
            f"connected components: {bad} nodes of bucket {kv[0]} are not in a star after {max_rounds} "
            f"large-star/small-star rounds; set corpus.BeamComponentsConfig.max_rounds higher (e.g. "
            f"{2 * max_rounds}) and rerun")
    if len(rows):
        yield rows


class ConnectedComponents(beam.PTransform):
    """Edge batches ((k, 2) arrays or lists of pairs) -> [node, root] row batches.

    One row for every node that is not the minimum (root) of its connected component; nodes
    are ints or strings, compared as such. Metrics (namespace METRICS_NAMESPACE) per round
    and operation: `*_group_edges` (a distribution over join groups), `*_bucket_rows` (over node
    buckets), `*_edges` and `*_changed` (counters; `changed` is 0 once a round is a fixed point).
    """

    def __init__(self, config: BeamComponentsConfig = BeamComponentsConfig()):
        super().__init__()
        config.check()
        self.config = config

    def expand(self, batches):
        c = self.config
        edges = batches | "Canonical" >> beam.Map(canonical_edges)
        for r in range(c.max_rounds):
            for op in (LARGE, SMALL):
                edges = edges | f"Round{r:02d}{op.capitalize()}Star" >> StarOp(op, r, c)
        return (edges
                | "CheckParts" >> beam.FlatMap(check_parts, c.num_buckets)
                | "CheckTable" >> beam.CombinePerKey(_TableFn(merge_check_tables))
                | "Leaves" >> beam.FlatMap(_leaves_of_bucket, c.max_rounds))
