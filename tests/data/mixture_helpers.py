"""A small processed corpus of real web text (tests/fixtures/corpus/c4_sample_100.jsonl) split into
MassiveText-named components, processed by `data process`'s in-process pipeline, plus a vocabulary."""
import json
import os

from gopher_jax.data import tokenizer
from gopher_jax.data.corpus import config as C
from gopher_jax.data.corpus.local_pipeline import run_local

from tests.fixtures.paths import C4

# component -> (first document, count) of the c4 sample (100 documents)
SLICES = {"massiveweb": (0, 45), "books": (45, 18), "news": (63, 25), "github": (88, 12)}


def c4_texts():
    with open(C4, encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]


def write_raw(tmp, slices=SLICES):
    """Writes one jsonl per component; returns ["name=path", ...] inputs for `data process`."""
    texts = c4_texts()
    inputs = []
    for name, (start, n) in slices.items():
        path = os.path.join(tmp, "raw", f"{name}.jsonl")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            for t in texts[start:start + n]:
                f.write(json.dumps({"text": t}) + "\n")
        inputs.append(f"{name}={path}")
    return inputs


def processed_corpus(tmp, slices=SLICES, validation_fraction=0.2):
    """Returns (processed output dir with manifest.json, SentencePiece model path)."""
    out = os.path.join(tmp, "processed")
    cfg = C.ProcessConfig(pipeline=C.PipelineConfig(stages=("exact_dedup",), num_shards=2,
                                                    validation_fraction=validation_fraction))
    run_local(write_raw(tmp, slices), out, cfg, progress=False)
    vocab = tokenizer.train_tokenizer(c4_texts(), os.path.join(tmp, "spm"), vocab_size=512, model_type="bpe",
                                      normalization="identity", split_digits=True, byte_fallback=True)
    return out, vocab
