"""`gopher-jax data pack`: fills a packed-data root that a run reads with packed_data.build_missing=False."""
import json
import os

import gin
import numpy as np
import pytest

from data_tasks import massivetext
from gopher_jax import cli
from gopher_jax.data import manifest as manifest_lib
from gopher_jax.data import packed_store
from gopher_jax.data.training_data import build_training_data
from tests.data.mixture_helpers import processed_corpus

SEQ = 32
MIX = "packtest"  # a task-name prefix no other test registers
SLICES = {"massiveweb": (0, 40), "books": (40, 20), "news": (60, 25), "github": (85, 15)}


@pytest.fixture(autouse=True)
def clean_gin():
    """The command parses gin globally; leave no bindings behind for other tests."""
    yield
    gin.clear_config()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pack")
    out, vocab = processed_corpus(str(tmp), slices=SLICES)
    return out, vocab, str(tmp / "packed")


def pack(corpus, tmp_path, *extra):
    """Runs the command; returns (exit code, {(component, split): table row})."""
    out, vocab, root = corpus
    js = tmp_path / f"pack{len(list(tmp_path.iterdir()))}.json"
    rc = cli.main(["data", "pack", f"--manifest={out}", f"--tokenizer={vocab}", f"--seq_len={SEQ}", f"--out={root}",
                   f"--mixture_name={MIX}", "--no_progress", f"--json={js}", *extra])
    rows = {(r["component"], r["split"]): r for r in json.load(open(js))["stores"]} if rc == 0 else {}
    return rc, rows


def meta_mtimes(root):
    """Returns {path: mtime} of every file under root (a rebuilt store rewrites all of its files)."""
    return {os.path.join(d, f): os.stat(os.path.join(d, f)).st_mtime_ns for d, _, files in os.walk(root)
            for f in files}


def test_pack_fills_one_root_across_runs_and_a_run_reads_it_without_packing(corpus, tmp_path, capsys):
    out, vocab, root = corpus
    m = manifest_lib.read_manifest(out)
    rc, rows = pack(corpus, tmp_path, "--components=books,news")
    assert rc == 0
    printed = capsys.readouterr().out
    assert "padding" in printed and "packed_data.build_missing=False" in printed
    assert set(rows) == {(c, s) for c in ("books", "news") for s in ("train", "validation")}
    for (c, split), r in rows.items():
        assert r["status"] == "packed"
        entry = m.components[c].splits[split]
        assert (r["documents"], r["bytes"]) == (entry.documents, entry.bytes)  # every document, all its text
        store = packed_store.open_store(f"{MIX}_{c}", split, SEQ, root, build_missing=False, progress=False)
        _, segments, row_bytes = store.read(np.arange(store.rows))
        assert r["tokens"] == int((segments > 0).sum()) and r["bytes"] == int(row_bytes.sum())
        assert r["padding_fraction"] == pytest.approx(float((segments == 0).mean()))

    # Another machine packs another component into the same root; the first stores are untouched.
    before = meta_mtimes(root)
    rc, rows = pack(corpus, tmp_path, "--components=github")
    assert rc == 0 and {r["status"] for r in rows.values()} == {"packed"} and set(c for c, _ in rows) == {"github"}
    assert all(meta_mtimes(root)[p] == t for p, t in before.items())

    # A second run over the same components is a no-op: every store reused, nothing rewritten.
    before = meta_mtimes(root)
    rc, rows = pack(corpus, tmp_path, "--components=books,news,github")
    assert rc == 0 and len(rows) == 6 and {r["status"] for r in rows.values()} == {"reused"}
    assert meta_mtimes(root) == before
    # With the run's gin weights, the components are the ones it trains on.
    rc, rows = pack(corpus, tmp_path, '--gin_param=register_massivetext_tasks.weights={"books": 1, "news": 0}')
    assert rc == 0 and set(c for c, _ in rows) == {"books"} and {r["status"] for r in rows.values()} == {"reused"}

    # A run reads the root with build_missing=False ...
    gin.bind_parameter("packed_data.root", root)
    gin.bind_parameter("packed_data.build_missing", False)
    weights = {"books": 1.0, "news": 1.0, "github": 1.0}
    name = massivetext.register_massivetext_tasks(vocab, manifest=out, weights=weights, mixture_name=MIX,
                                                  verbose=False)
    td = build_training_data(name, seq_len=SEQ, global_batch=4, seed=0, eval_batches=0, progress=False)
    assert next(td.train)["targets"].shape == (4, SEQ)
    assert {e.name for e in td.evals} == set(weights)
    # ... and names the missing store and the command that builds it, building nothing.
    name = massivetext.register_massivetext_tasks(vocab, manifest=out, weights={**weights, "massiveweb": 1.0},
                                                  mixture_name=MIX, verbose=False)
    with pytest.raises(FileNotFoundError, match=f"no packed store for task '{MIX}_massiveweb'.*gopher-jax data pack"):
        build_training_data(name, seq_len=SEQ, global_batch=4, seed=0, eval_batches=0, progress=False)
    assert not os.path.exists(os.path.join(root, f"{MIX}_massiveweb"))


def test_bad_flags_are_named_with_the_fix(corpus, tmp_path, capsys):
    out, vocab, root = corpus
    base = ["data", "pack", f"--tokenizer={vocab}", f"--seq_len={SEQ}", f"--out={root}", f"--mixture_name={MIX}"]
    assert cli.main(base + [f"--manifest={tmp_path / 'nowhere'}"]) == 2
    err = capsys.readouterr().err
    assert f"--manifest={tmp_path / 'nowhere'}: no corpus manifest" in err and "gopher-jax data process" in err
    assert cli.main(base + [f"--manifest={out}", "--components=books,poetry"]) == 2
    err = capsys.readouterr().err
    assert "--components names ['poetry']" in err and "it has ['books', 'github', 'massiveweb', 'news']" in err
    assert cli.main(["data", "pack", f"--manifest={out}", f"--out={root}"]) == 2
    err = capsys.readouterr().err
    assert "--tokenizer=MODEL" in err and "--seq_len=N" in err
    assert cli.main(base[:2] + [f"--tokenizer={tmp_path / 'x.model'}"] + base[3:] + [f"--manifest={out}"]) == 2
    assert f"--tokenizer={tmp_path / 'x.model'}: no such file" in capsys.readouterr().err
    assert cli.main(base + [f"--manifest={out}", "--splits=train,test"]) == 2
    assert "--splits='train,test'" in capsys.readouterr().err
    assert not any(os.path.exists(os.path.join(root, f"{MIX}_{c}")) for c in ("massiveweb",))
