"""Test-set decontamination in Gopher mode (drop at 13-gram Jaccard >= 0.8) and MT-NLG mode
(cut matching 13-grams +- 200 characters, drop short fragments and documents split > 10 times),
on a crafted training set containing real LAMBADA passages (the committed eval fixtures)."""
import bz2
import json
import os

import pytest

from gopher_jax.data.corpus.decontamination import DecontamConfig, EvalIndex, decontaminate
from gopher_jax.data.corpus.documents import Doc
from gopher_jax.data.corpus.eval_sets import load_eval_sets, load_eval_texts
from gopher_jax.data.corpus.fuzzy_dedup import DedupConfig
from gopher_jax.data.corpus.lsh import candidate_probability
from gopher_jax.data.corpus.near_duplicates import pair_with_exact_jaccard, random_words

from tests.fixtures.paths import EVAL


@pytest.fixture(scope="module")
def passages():
    with open(f"{EVAL}/lambada_openai.jsonl") as f:  # lm-eval's lambada_openai: {"text": ...}
        return [json.loads(next(f))["text"] for _ in range(40)]


@pytest.fixture(scope="module")
def eval_file(tmp_path_factory, passages):
    path = tmp_path_factory.mktemp("eval") / "lambada_part.jsonl"
    with open(path, "w") as f:
        for p in passages:
            context, _, last = p.rpartition(" ")
            f.write(json.dumps({"context": context, "continuation": last}) + "\n")
    return str(path)


def filler(seed, chars):
    import numpy as np
    words = random_words(np.random.default_rng(seed), chars // 5)
    return " ".join(words)[:chars]


@pytest.fixture(scope="module")
def training(passages):
    p = passages
    return {
        "copy": Doc(id="copy", source="t", text=p[0]),  # the eval passage itself
        "near_copy": Doc(id="near", source="t", text=p[1] + " An extra closing remark."),
        "embedded": Doc(id="emb", source="t", text=filler(1, 3000) + " " + p[2] + " " + filler(2, 3000)),
        "many": Doc(id="many", source="t", text=" ".join(filler(10 + i, 800) + " " + p[3 + i] for i in range(12))),
        "clean": Doc(id="clean", source="t", text=filler(3, 5000)),
    }


def test_gopher_mode_drops_near_copies_only(eval_file, training):
    index = EvalIndex.from_paths(DecontamConfig(mode="gopher", eval_paths=(eval_file,)))
    out = {k: decontaminate(d, index) for k, d in training.items()}
    assert out["copy"].drop == "decontam:eval_overlap"
    assert out["near_copy"].drop == "decontam:eval_overlap"
    for k in ("embedded", "many", "clean"):  # low Jaccard: a long document merely contains it
        assert out[k].alive and out[k].fragments is None


@pytest.mark.parametrize("target", [0.80, 0.82])
def test_gopher_mode_recall_at_the_threshold(target):
    """Training documents at exactly J = 0.80 / 0.82 with an eval document are dropped >= 95% of
    the time (the default 25 x 8 banding; MT-NLG's 20 x 13 would catch 68% / 79%)."""
    import numpy as np
    rng = np.random.default_rng(int(target * 100) + 1)
    pairs = [pair_with_exact_jaccard(rng, target)[:2] for _ in range(200)]
    index = EvalIndex([a for a, _ in pairs], DecontamConfig(mode="gopher"))
    dropped = [not decontaminate(Doc(id=str(i), source="t", text=b), index).alive for i, (_, b) in enumerate(pairs)]
    rate, cfg = float(np.mean(dropped)), DedupConfig()
    print(f"\ndecontam J={target}: dropped {rate:.3f} (theory {candidate_probability(target, cfg.bands, cfg.rows):.3f})")
    assert rate >= 0.95


def test_mtnlg_mode_cuts_passages_with_context(eval_file, training, passages):
    cfg = DecontamConfig(mode="mtnlg", eval_paths=(eval_file,))
    index = EvalIndex.from_paths(cfg)
    out = {k: decontaminate(d, index) for k, d in training.items()}
    assert out["copy"].drop == "decontam:fragments_too_short"
    assert out["many"].drop == "decontam:too_many_splits"  # 12 separate passages > 10 splits
    assert out["clean"].alive and out["clean"].fragments is None
    emb = out["embedded"]
    assert emb.alive and emb.changes == ("decontam:cut",) and len(emb.fragments) == 2
    text = training["embedded"].text
    start = text.index(passages[2])
    # Everything from 200 characters before the first matched word to 200 after the last is gone.
    assert text[: start - 200].strip().startswith(emb.fragments[0][:50])
    assert len(emb.fragments[0]) <= start - 200 and passages[2][:40] not in " ".join(emb.fragments)
    assert all(len(f) >= cfg.min_fragment_chars for f in emb.fragments)


def test_mtnlg_split_limit_is_configurable(eval_file, training):
    index = EvalIndex.from_paths(DecontamConfig(mode="mtnlg", eval_paths=(eval_file,), max_splits=20))
    out = decontaminate(training["many"], index)
    assert out.alive and len(out.fragments) >= 10


def test_eval_formats_load(tmp_path):
    assert len(load_eval_texts(f"{EVAL}/lambada_openai.jsonl")) == 50
    wg = load_eval_texts(f"{EVAL}/winogrande.jsonl")[0]  # the gold option fills the blank
    assert wg == "Sarah was a much better surgeon than Maria so Maria always got the easier cases."
    copa = load_eval_texts(f"{EVAL}/copa.jsonl")[0]
    assert copa == "The man turned on the faucet. Water flowed from the spout."
    # A whole directory of public release files: the ten fixture sets.
    assert len(load_eval_sets([os.path.join(EVAL, f) for f in sorted(os.listdir(EVAL))])) == 10 * 50
    # HellaSwag's 6-line text form and the internal {query, choices, gold} form.
    hs = tmp_path / "hellaswag_val.txt.bz2"
    hs.write_bytes(bz2.compress(b"Roof shingle removal: A man is sitting on a roof. he\n3\na\nb\nc\n"
                                b"starts pulling up roofing on a roof.\n"))
    assert load_eval_texts(str(hs)) == ["A man is sitting on a roof. he starts pulling up roofing on a roof."]
    mc = tmp_path / "mc.jsonl"
    mc.write_text(json.dumps({"query": "Q: why?", "choices": ["a", "b"], "gold": 1}) + "\n")
    assert load_eval_texts(str(mc)) == ["Q: why? b"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"foo": 1}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:1: unknown eval record keys \['foo'\]"):
        load_eval_texts(str(bad))
    with pytest.raises(FileNotFoundError, match="eval set"):
        load_eval_sets([str(tmp_path / "nope.jsonl")])


def test_missing_eval_sets_are_named():
    with pytest.raises(ValueError, match="--eval"):
        EvalIndex.from_paths(DecontamConfig())
