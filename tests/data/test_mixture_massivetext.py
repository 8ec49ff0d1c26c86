"""MassiveText seqio tasks over pipeline-written TFRecord shards, mixed at Gopher's weights."""
import collections
import json

import gin
import pytest
import seqio
import sentencepiece as spm

from data_tasks import massivetext
from gopher_jax import gin_utils
from gopher_jax.data import mixture
from gopher_jax.data.corpus import config as C
from gopher_jax.data.corpus.local_pipeline import run_local


@pytest.fixture(scope="module")
def shards_and_vocab(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mt")
    with open("../shared/data/corpus/c4_sample_500.jsonl") as f:
        c4 = [json.loads(line)["text"] for line in f][:200]
    spm.SentencePieceTrainer.train(sentence_iterator=iter(c4), model_prefix=str(tmp / "spm"), vocab_size=300,
                                   user_defined_symbols=list(massivetext.COMPONENTS), minloglevel=2)
    paths = {}
    cfg = C.ProcessConfig(pipeline=C.PipelineConfig(stages=("exact_dedup",), num_shards=2))
    for comp in massivetext.COMPONENTS:
        src = tmp / f"{comp}.jsonl"
        with open(src, "w") as f:
            for i in range(20):
                f.write(json.dumps({"text": f"{comp} document number {i} of the {comp} set"}) + "\n")
        run_local([str(src)], str(tmp / comp), cfg, progress=False)
        paths[comp] = str(tmp / comp / "part-*.tfrecord")
    return paths, str(tmp / "spm.model")


def test_mixture_follows_gopher_weights(shards_and_vocab):
    paths, vocab = shards_and_vocab
    name = massivetext.register_massivetext_tasks(vocab, paths=paths)
    mix = seqio.get_mixture_or_task(name)
    assert {t.name: mix.get_rate(t) for t in mix.tasks} == {
        f"massivetext_{c}": w for c, w in massivetext.GOPHER_MASSIVETEXT_SAMPLING.items()}
    ds = mix.get_dataset({"targets": 64}, split="train", shuffle=False, seed=0)
    voc = mix.output_features["targets"].vocabulary
    n = 2_000
    counts = collections.Counter(voc.decode(ex["targets"].tolist()).split()[0] for ex in ds.take(n).as_numpy_iterator())
    for comp, w in massivetext.GOPHER_MASSIVETEXT_SAMPLING.items():
        assert abs(counts[comp] / n - w) < 0.01, (comp, counts[comp])


def test_gin_file_binds_weights_and_paths():
    gin_utils.parse_gin(["gin_configs/data/massivetext.gin"])
    assert gin.query_parameter("register_massivetext_tasks.weights") is not None
    assert set(gin.query_parameter("register_massivetext_tasks.paths")) == set(massivetext.COMPONENTS)
    gin.clear_config()


def test_unknown_component_is_named(shards_and_vocab):
    _, vocab = shards_and_vocab
    with pytest.raises(ValueError, match="unknown components \\['reddit'\\]"):
        massivetext.register_massivetext_tasks(vocab, paths={"reddit": "x"})


def test_public_standins_register_without_downloading(shards_and_vocab):
    _, vocab = shards_and_vocab
    name = massivetext.register_public_standins(vocab, tfds_data_dir="/nonexistent")
    assert {t.name for t in seqio.get_mixture_or_task(name).tasks} == {"public_c4", "public_wikipedia", "public_pg19"}
    assert mixture.normalize_weights(massivetext.PUBLIC_SAMPLING)["pg19"] == pytest.approx(0.27 / 0.97)
