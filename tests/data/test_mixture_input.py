"""The packed-mixture training input: tracked shares, exact resume, host-count independence, exact bytes."""
import json
import os

import numpy as np
import pytest

from data_tasks import massivetext
from gopher_jax.data import packed_store
from gopher_jax.data.training_data import build_training_data
from tests.data.mixture_helpers import processed_corpus

SEQ = 64
WEIGHTS = {"massiveweb": 0.48, "books": 0.27, "news": 0.10, "github": 0.03}


@pytest.fixture(scope="module")
def mixture(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("mix"))
    out, vocab = processed_corpus(tmp)
    name = massivetext.register_massivetext_tasks(vocab, manifest=out, weights=WEIGHTS, mixture_name="tmix",
                                                  verbose=False)
    return name, out, os.path.join(tmp, "packed")


def data(mixture, **kw):
    name, _, root = mixture
    args = dict(seq_len=SEQ, global_batch=8, seed=0, eval_batches=0, progress=False, packed_root=root)
    return build_training_data(name, **{**args, **kw})


def test_realised_shares_read_from_the_batches_are_within_one_over_n(mixture):
    td = data(mixture)
    stores = {c.name: c.store for c in td.train.components}
    rows_of = {n: {tuple(r) for r in s.read(np.arange(s.rows))[0]} for n, s in stores.items()}
    counts = dict.fromkeys(stores, 0)
    for _ in range(50):
        batch = next(td.train)
        for row, c in zip(batch["targets"], td.train.last_components):
            name = td.train.names[c]
            assert tuple(row) in rows_of[name]  # the row really comes from the component it is counted for
            counts[name] += 1
    n = sum(counts.values())
    target = {k: v / sum(WEIGHTS.values()) for k, v in WEIGHTS.items()}
    for name in counts:
        assert abs(counts[name] / n - target[name]) <= 1 / n, (name, counts[name] / n, target[name])


def test_each_epoch_visits_every_row_once(mixture):
    td = data(mixture, global_batch=16)
    comp = [c for c in td.train.components if c.name == "news"][0]
    want = comp.store.rows
    seen = []
    while len(seen) < want:
        batch = next(td.train)
        seen += [tuple(r) for r, c in zip(batch["targets"], td.train.last_components) if td.train.names[c] == "news"]
    all_rows = sorted(tuple(r) for r in comp.store.read(np.arange(want))[0])
    assert sorted(seen[:want]) == all_rows


def test_resume_from_state_equals_uninterrupted(mixture):
    ref = data(mixture)
    ref_batches = [next(ref.train) for _ in range(12)]
    first = data(mixture)
    for _ in range(7):
        next(first.train)
    state = json.loads(json.dumps(first.train.get_state()))  # through JSON, as in a checkpoint
    resumed = data(mixture)
    resumed.train.set_state(state)
    for i in range(7, 12):
        got = next(resumed.train)
        for k in got:
            np.testing.assert_array_equal(got[k], ref_batches[i][k])


def test_two_hosts_read_the_one_host_global_batch_and_resume_on_one_host(mixture):
    one = data(mixture)
    hosts = [data(mixture, process_index=p, process_count=2) for p in range(2)]
    for _ in range(5):
        g = next(one.train)
        parts = [next(h.train) for h in hosts]
        for k in g:
            np.testing.assert_array_equal(np.concatenate([p[k] for p in parts]), g[k])
    # Saved by the 2-host run (process 0's state), resumed on 1 host (and the reverse): same global stream.
    single = data(mixture)
    single.train.set_state(hosts[0].train.get_state())
    back = [data(mixture, process_index=p, process_count=2) for p in range(2)]
    for b in back:
        b.train.set_state(one.train.get_state())
    for _ in range(3):
        g = next(one.train)
        np.testing.assert_array_equal(next(single.train)["targets"], g["targets"])
        np.testing.assert_array_equal(np.concatenate([next(b.train)["targets"] for b in back]), g["targets"])


def test_state_from_another_data_config_is_refused(mixture):
    td = data(mixture)
    next(td.train)
    state = td.train.get_state()
    other = data(mixture, seed=1)
    with pytest.raises(ValueError, match="train.seed was 0, now 1"):
        other.train.set_state(state)
    with pytest.raises(ValueError, match="components were"):
        bad = dict(state, components={"books": state["components"]["books"]})
        td.train.set_state(bad)


def test_held_out_bytes_are_exactly_the_scored_text(mixture):
    _, out, _ = mixture
    td = data(mixture)
    manifest = json.load(open(os.path.join(out, "manifest.json")))
    assert {e.name for e in td.evals} == set(WEIGHTS)
    for ev in td.evals:
        scored = sum(b for _, b in ev.batches(8))
        assert scored == manifest["components"][ev.name]["splits"]["validation"]["bytes"]
        assert ev.store.meta.bytes == scored


def test_packed_store_of_another_vocabulary_is_refused_when_not_rebuilt(mixture, tmp_path):
    name, out, root = mixture
    data(mixture)  # the stores exist under root
    from gopher_jax.data import tokenizer
    from tests.data.mixture_helpers import c4_texts
    other = tokenizer.train_tokenizer(c4_texts()[50:100], str(tmp_path / "other"), vocab_size=400,
                                      model_type="bpe", normalization="identity", split_digits=True,
                                      byte_fallback=True)
    massivetext.register_massivetext_tasks(other, manifest=out, weights=WEIGHTS, mixture_name="tmix", verbose=False)
    try:
        with pytest.raises(ValueError, match="another vocabulary.*train.tokenizer"):
            packed_store.open_store("tmix_books", "train", SEQ, root, build_missing=False, progress=False)
    finally:
        massivetext.register_massivetext_tasks(_vocab_of(root), manifest=out, weights=WEIGHTS, mixture_name="tmix",
                                               verbose=False)


def _vocab_of(root):
    return os.path.join(os.path.dirname(root), "spm.model")


def test_fresh_state_starts_any_mixture_from_the_top(mixture):
    from gopher_jax.data.mixture_input import fresh_state
    new, used = data(mixture), data(mixture)
    for _ in range(3):
        next(used.train)
    used.train.set_state(fresh_state())
    np.testing.assert_array_equal(next(used.train)["targets"], next(new.train)["targets"])
