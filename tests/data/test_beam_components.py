"""Distributed connected components (beam_components.py) == the in-process union-find
(components.losers), from tiny hypothesis graphs to a 10^6-edge graph on DirectRunner, with
every join group and node bucket holding a bounded share of the edges."""
import functools
import glob
import uuid

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from hypothesis import given, settings
from hypothesis import strategies as st

from gopher_jax.data.corpus import beam_components as bc
from gopher_jax.data.corpus import components
from gopher_jax.data.corpus.components import BeamComponentsConfig


def union_find_losers(edges) -> dict:
    return components.losers([(a, b) for a, b in np.asarray(edges).tolist()])


def as_dict(rows) -> dict:
    return {a: b for a, b in np.asarray(rows).reshape(-1, 2).tolist()}


def chain(nodes):
    return list(zip(nodes[:-1], nodes[1:]))


def shapes(rng, base: int = 0):
    """Chains (sorted and shuffled), a star whose hub is its largest node, a clique, random edges."""
    edges, n = [], base
    edges += chain(list(range(n, n + 40))); n += 40
    edges += chain(list(rng.permutation(30) + n)); n += 30
    edges += [(n + i, n + 25) for i in range(25)]; n += 26
    edges += [(n + i, n + j) for i in range(8) for j in range(i + 1, 8)]; n += 8
    edges += [tuple(rng.integers(n, n + 60, 2)) for _ in range(40)]; n += 60
    return [(int(a), int(b)) for a, b in edges]


# ---------------------------------------------------------------------------------------------
# The algorithm's logic, on one partition (fast: many graphs)

@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40)), min_size=1, max_size=80))
def test_star_rounds_equal_union_find_on_random_graphs(edges):
    rows, _ = bc.components_in_memory(edges)
    assert as_dict(rows) == union_find_losers(edges)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.text("abc|0", max_size=4), st.text("abc|0", max_size=4)), min_size=1, max_size=40))
def test_star_rounds_on_string_nodes_keep_the_smallest_string(edges):
    # Strings (document ranks) are compared as strings: the same survivor as the in-process rule.
    rows, _ = bc.components_in_memory(np.array(edges, dtype=object))
    assert as_dict(rows) == union_find_losers(np.array(edges, dtype=object))


@pytest.mark.parametrize("n", [2, 3, 64, 1000, 4096])
def test_rounds_of_a_sorted_chain_grow_like_log2_of_its_length(n):
    # The slowest family measured; BeamComponentsConfig.max_rounds's default rests on it.
    e = chain(list(range(n)))
    rows, rounds = bc.components_in_memory(e)
    assert as_dict(rows) == {i: 0 for i in range(1, n)}
    assert rounds <= int(np.ceil(np.log2(n))), rounds


def test_shapes_and_big_int_ids_equal_union_find():
    rng = np.random.default_rng(0)
    e = np.array(shapes(rng), dtype=np.int64)
    # Ids outside [0, 2^31) and negative ones are coded by sorting, keeping their order.
    for shift in (0, 2 ** 40, -(2 ** 50)):
        rows, _ = bc.components_in_memory(e + shift)
        assert as_dict(rows) == union_find_losers(e + shift)


# ---------------------------------------------------------------------------------------------
# On Beam

def run_components(tmp_path, batches, config: BeamComponentsConfig):
    """Runs ConnectedComponents on DirectRunner; returns ([node, root] rows, metrics by name)."""
    out = tmp_path / uuid.uuid4().hex
    out.mkdir()

    def save(rows):
        np.save(out / f"{uuid.uuid4().hex}.npy", np.asarray(rows), allow_pickle=True)

    p = beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner", "--direct_num_workers=1"]))
    _ = batches(p) | bc.ConnectedComponents(config) | beam.Map(save)
    result = p.run()
    result.wait_until_finish()
    parts = [np.load(f, allow_pickle=True) for f in sorted(glob.glob(str(out / "*.npy")))]
    rows = np.concatenate(parts) if parts else np.zeros((0, 2), np.int64)
    metrics = result.metrics().query(MetricsFilter().with_namespace(bc.METRICS_NAMESPACE))
    by_name = {m.key.metric.name: m.result for m in metrics["counters"] + metrics["distributions"]}
    return rows, by_name


def test_beam_equals_union_find_on_small_graphs(tmp_path):
    rng = np.random.default_rng(1)
    ints = shapes(rng) + shapes(rng, base=1000)
    strs = [(f"{a:06d}|doc{b % 7}", f"{b:06d}|doc{a % 5}") for a, b in ints[::3]]
    cfg = BeamComponentsConfig(num_buckets=3, num_groups=4, max_rounds=8)
    for edges, dtype in ((ints, np.int64), (strs, object)):
        batches = [np.array(edges[i::5], dtype=dtype) for i in range(5)]
        rows, metrics = run_components(tmp_path, lambda p: p | beam.Create(batches), cfg)
        assert as_dict(rows) == union_find_losers(np.array(edges, dtype=dtype))
        assert metrics[f"r{cfg.max_rounds - 1:02d}_small_changed"] == 0  # converged before the last round


def test_too_few_rounds_fail_naming_the_setting(tmp_path):
    batches = [np.array(chain(list(range(64))), dtype=np.int64)]  # needs 6 rounds
    with pytest.raises(Exception, match=r"corpus\.BeamComponentsConfig\.max_rounds"):
        run_components(tmp_path, lambda p: p | beam.Create(batches), BeamComponentsConfig(2, 2, max_rounds=2))


def test_config_names_a_bad_value():
    with pytest.raises(ValueError, match=r"corpus\.BeamComponentsConfig\.num_groups=0"):
        bc.ConnectedComponents(BeamComponentsConfig(num_groups=0))


# ---------------------------------------------------------------------------------------------
# Scale: >= 10^6 edges, long sorted chains, one giant cluster, one hub of degree 10^5

GIANT_NODES, GIANT_CHORDS, CHAIN_LENGTH, CHAINS, HUB_DEGREE = 200_000, 200_000, 16_384, 24, 100_000


@functools.lru_cache(maxsize=1)
def scale_graph() -> np.ndarray:
    """Returns a shuffled (k, 2) int64 edge array; k = 1,031,191."""
    rng = np.random.default_rng(0)
    parts, base = [], 0
    # The giant cluster: a path through 200k nodes in random order, plus 200k random chords.
    p = rng.permutation(GIANT_NODES)
    parts += [np.stack([p[:-1], p[1:]], 1), rng.choice(p, (GIANT_CHORDS, 2))]
    base += GIANT_NODES
    # Long chains with their nodes in sorted order: the slowest case for the rounds.
    for _ in range(CHAINS):
        c = np.arange(CHAIN_LENGTH) + base
        parts.append(np.stack([c[:-1], c[1:]], 1))
        base += CHAIN_LENGTH
    # A hub joined to 10^5 nodes, all smaller than it (so it is a loser, not the root).
    leaves = np.arange(HUB_DEGREE) + base
    parts.append(np.stack([leaves, np.full(HUB_DEGREE, base + HUB_DEGREE)], 1))
    base += HUB_DEGREE + 1
    for _ in range(200):  # cliques of 20
        i, j = np.triu_indices(20, 1)
        parts.append(np.stack([i + base, j + base], 1))
        base += 20
    parts.append(rng.integers(base, base + 300_000, (100_000, 2)))  # many small components
    e = np.concatenate(parts)
    return e[rng.permutation(len(e))]


def test_million_edge_graph_equals_union_find_with_bounded_groups(tmp_path):
    num_batches = 16
    cfg = BeamComponentsConfig(num_buckets=16, num_groups=16, max_rounds=15)  # the graph needs 14

    def batches(p):
        return (p | beam.Create(list(range(num_batches)))
                  | beam.Map(lambda i: scale_graph()[i::num_batches]))

    rows, metrics = run_components(tmp_path, batches, cfg)
    e = scale_graph()
    assert len(e) >= 10 ** 6
    assert as_dict(rows) == union_find_losers(e)
    # Fixed point reached with a round to spare.
    assert metrics[f"r{cfg.max_rounds - 1:02d}_large_changed"] == 0
    assert metrics[f"r{cfg.max_rounds - 1:02d}_small_changed"] == 0
    # Balance: no join group holds more than 1.5x its even share of a round's edges, although the
    # giant cluster is 39% of the input edges and the hub alone 10% (a join keyed by node would put
    # each in one group). Node buckets likewise hold a bounded share of the rows.
    worst_group = max(metrics[f"r{r:02d}_{op}_group_edges"].max / metrics[f"r{r:02d}_{op}_edges"]
                      for r in range(cfg.max_rounds) for op in (bc.LARGE, bc.SMALL))
    worst_bucket = max(metrics[f"r{r:02d}_{op}_bucket_rows"].max / metrics[f"r{r:02d}_{op}_bucket_rows"].sum
                       for r in range(cfg.max_rounds) for op in (bc.LARGE, bc.SMALL))
    print(f"\nedges {len(e):,}; largest join group {worst_group:.4f} of a round's edges, "
          f"largest node bucket {worst_bucket:.4f} of its rows (even share {1 / cfg.num_groups:.4f})")
    assert worst_group <= 1.5 / cfg.num_groups
    assert worst_bucket <= 1.5 / cfg.num_buckets
    # After convergence the giant cluster is one star: keyed by its root, one group would hold it.
    assert (GIANT_NODES - 1) / metrics[f"r{cfg.max_rounds - 1:02d}_small_edges"] > 4 / cfg.num_groups


def test_fuzzy_dedup_has_no_global_step_over_edges_or_losers():
    """The only global combines in FuzzyDedup are the two pair counts; no side input carries edges or losers."""
    from apache_beam.pipeline import PipelineVisitor

    from gopher_jax.data.corpus.beam_pipeline import FuzzyDedup
    from gopher_jax.data.corpus.documents import Doc
    from gopher_jax.data.corpus.fuzzy_dedup import DedupConfig

    p = beam.Pipeline()
    _ = (p | beam.Create([Doc(id="a", source="s", text="x y z")])
           | "Fuzzy" >> FuzzyDedup(DedupConfig(), BeamComponentsConfig(max_rounds=2)))
    found = {"global": set(), "side": set()}

    class Visitor(PipelineVisitor):
        def visit_transform(self, node):
            step = node.full_label.split("/")[1] if node.full_label.startswith("Fuzzy/") else ""
            if "CombineGlobally" in node.full_label:
                found["global"].add(step)
            if node.side_inputs:
                found["side"].add(step)

    p.visit(Visitor())
    assert found["global"] == {"CountCandidates", "CountEdges"}
    # Count.Globally's default for an empty input, and PairInfo joining the two counts.
    assert found["side"] == {"CountCandidates", "CountEdges", "PairInfo"}
