"""compare's intervals and p-values equal scipy's on the same numbers; one seed shows no CI and says why."""
import numpy as np
import pytest
from scipy import stats as sps

from gopher_jax.sweep import compare, stats

BASE = [3.912, 3.951, 3.897, 3.930]
ROPE = [3.880, 3.934, 3.861, 3.915]


def test_mean_ci_is_scipys_t_interval():
    m = stats.mean_ci(BASE)
    lo, hi = sps.t.interval(0.95, len(BASE) - 1, loc=np.mean(BASE), scale=sps.sem(BASE))
    assert m.mean == pytest.approx(np.mean(BASE), rel=1e-12)
    assert m.mean - m.half_width == pytest.approx(lo, rel=1e-12) and m.mean + m.half_width == pytest.approx(hi, rel=1e-12)
    one = stats.mean_ci([3.9])
    assert one.half_width is None and "one seed" in one.why_none


def test_paired_delta_is_scipys_ttest_rel():
    d = stats.paired_delta(dict(enumerate(ROPE)), dict(enumerate(BASE)))
    ref = sps.ttest_rel(ROPE, BASE)
    assert d.p_value == pytest.approx(ref.pvalue, rel=1e-10)
    diff = np.subtract(ROPE, BASE)
    lo, hi = sps.t.interval(0.95, len(diff) - 1, loc=diff.mean(), scale=sps.sem(diff))
    assert d.delta - d.half_width == pytest.approx(lo, rel=1e-10) and d.delta + d.half_width == pytest.approx(hi, rel=1e-10)
    # the bootstrap interval of the mean difference lies within the sample's range of differences
    assert diff.min() <= d.bootstrap_low <= d.delta <= d.bootstrap_high <= diff.max()
    # pairing is by seed: seeds missing from one arm are left out
    partial = stats.paired_delta({0: ROPE[0], 1: ROPE[1], 7: 1.0}, dict(enumerate(BASE)))
    assert partial.n_pairs == 2 and partial.p_value == pytest.approx(sps.ttest_rel(ROPE[:2], BASE[:2]).pvalue)


def _records(arm, values, comp_offset=0.0):
    return [{"run": f"{arm}-{s}", "arm": arm, "seed": str(s), "status": "done", "step": 10, "eval_bits_per_byte": v,
             "eval_loss": 2 * v, "eval_bits_per_byte/books": v + comp_offset, "tokens": 100, "flops": 1e9,
             "tokens_per_s": 50.0, "mfu": 0.1, "run_dir": ""} for s, v in enumerate(values)]


def test_compare_table_uses_the_same_numbers():
    recs = _records("relative", BASE) + _records("rope", ROPE, 0.5) + _records("alibi", [3.95])
    table = compare.compare_arms(recs, baseline="relative")
    rows = {r["arm"]: r for r in table["arms"]}
    assert [r["arm"] for r in table["arms"]][0] == "relative"
    assert rows["rope"]["p_value"] == pytest.approx(sps.ttest_rel(ROPE, BASE).pvalue, rel=1e-10)
    assert rows["rope"]["eval_bits_per_byte/books"] == pytest.approx(np.mean(ROPE) + 0.5)
    assert rows["alibi"]["eval_bits_per_byte_ci"] is None and rows["alibi"]["p_value"] is None
    md = compare.to_markdown(table)
    assert "alibi: no CI (one seed" in md and "(baseline)" in md and "books" in md
    assert compare.to_csv(table).count("\n") == 4
    with pytest.raises(ValueError, match="--baseline='nope'"):
        compare.compare_arms(recs, baseline="nope")
    with pytest.raises(ValueError, match="--metric='nope'"):
        compare.compare_arms(recs, metric="nope")
