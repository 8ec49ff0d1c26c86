"""Reading shards: malformed input is counted, never fatal; stats account for every document."""
import json

import pytest

from gopher_jax.data.corpus import config as C
from gopher_jax.data.corpus.local_pipeline import run_local
from gopher_jax.data.corpus.reader import expand_inputs, read_documents, split_text
from gopher_jax.data.corpus.stats import Stats
from gopher_jax.data.corpus.writer import read_output_records
from tests.fixtures.paths import CORPUS, WIKITEXT2, gutenberg


def write_bad_shard(path):
    good = {"text": "A fine document. " * 60, "url": "http://example.com/1"}
    with open(path, "wb") as f:
        f.write((json.dumps(good) + "\n").encode())
        f.write(b"\xff\xfe not utf-8 \n")  # invalid UTF-8
        f.write(b"{not json}\n")
        f.write(b"[1, 2, 3]\n")  # JSON but not an object
        f.write(b'{"url": "no text field"}\n')
        f.write(b'{"text": 42}\n')
        f.write(b'{"text": "   "}\n')  # empty
        f.write(b"\n")  # blank line
        f.write((json.dumps({"text": "last line without newline " * 30})).encode())


def test_bad_input_is_counted_not_fatal(tmp_path):
    write_bad_shard(tmp_path / "bad.jsonl")
    docs = list(read_documents("bad", str(tmp_path / "bad.jsonl")))
    assert [d.drop for d in docs] == [
        None, "bad_input:invalid_utf8", "bad_input:invalid_json", "bad_input:not_an_object",
        "bad_input:missing_text", "bad_input:missing_text", "bad_input:empty_text", "bad_input:blank_line", None]
    assert docs[0].fields == {"url": "http://example.com/1"}


def test_pipeline_stats_add_up_and_fields_are_kept(tmp_path):
    write_bad_shard(tmp_path / "bad.jsonl")
    cfg = C.ProcessConfig(pipeline=C.PipelineConfig(stages=("unicode", "exact_dedup"), write_tfrecord=False))
    stats = run_local([str(tmp_path / "bad.jsonl")], str(tmp_path / "out"), cfg, str(tmp_path / "s.json"), progress=False)
    assert stats.read == 9 and stats.kept == 2
    assert stats.kept + sum(stats.dropped.values()) == stats.read
    assert stats.dropped["bad_input:missing_text"] == 2
    assert Stats.from_json(json.load(open(tmp_path / "s.json"))) == stats
    out = [json.loads(line) for line in read_output_records(str(tmp_path / "out"))]
    assert {"text": "A fine document. " * 60, "url": "http://example.com/1"} in out
    assert "documents read" in stats.summary()


def test_inputs_directories_names_and_errors(tmp_path):
    files = expand_inputs([CORPUS])
    sources = {s for s, _ in files}
    assert sources == {"c4_sample_100", "gutenberg", "tinyshakespeare", "wikitext2"}
    assert expand_inputs([f"books={gutenberg(11)}"]) == [("books", gutenberg(11))]
    with pytest.raises(FileNotFoundError, match="matches no file"):
        expand_inputs([str(tmp_path / "missing*.jsonl")])


def test_text_files_split_into_wikitext_articles():
    with open(f"{WIKITEXT2}/valid.txt", encoding="utf-8") as f:
        articles = split_text(f.read())
    assert len(articles) == 5 and articles[0].startswith(" = Homarus gammarus = ")
    assert split_text("no headings\nhere") == ["no headings\nhere"]
    with pytest.raises(ValueError, match="text_split"):
        split_text("x", "pages")


def test_stage_names_are_checked():
    assert C.parse_stages("decontam,quality") == ("quality", "decontam")
    with pytest.raises(ValueError, match="unknown stage"):
        C.parse_stages("quality,qualty")
