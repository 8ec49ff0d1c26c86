"""MassiveText seqio tasks registered from a `data process` manifest, mixed at Gopher's weights, with
clear errors for every bad input before anything compiles."""
import glob
import json
import os
import shutil

import gin
import pytest
import seqio

import data_tasks
from data_tasks import massivetext
from gopher_jax import gin_utils
from gopher_jax.data import mixture, task_specs, training_data
from tests.data.mixture_helpers import processed_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return processed_corpus(str(tmp_path_factory.mktemp("mt")))


def test_registration_leaves_out_components_without_data_and_prints_the_renormalisation(corpus, capsys):
    out, vocab = corpus
    name = massivetext.register_massivetext_tasks(vocab, manifest=out, mixture_name="mt1")
    mix = seqio.get_mixture_or_task(name)
    present = {"massiveweb": 0.48, "books": 0.27, "news": 0.10, "github": 0.03}  # no c4, no wikipedia here
    total = sum(present.values())
    assert {t.name: pytest.approx(mix.get_rate(t)) for t in mix.tasks} == {
        f"mt1_{c}": pytest.approx(w / total) for c, w in present.items()}
    printed = capsys.readouterr().err
    assert "left out (no data): c4, wikipedia" in printed
    assert f"{0.48 / total:.4f}" in printed  # the realised (renormalised) weight of massiveweb
    # Both splits, with exactly the documents the manifest lists.
    manifest = json.load(open(os.path.join(out, "manifest.json")))
    for comp in present:
        task = seqio.get_mixture_or_task(f"mt1_{comp}")
        for split in ("train", "validation"):
            n = sum(1 for _ in task.source.get_dataset(split, shuffle=False))
            assert n == manifest["components"][comp]["splits"][split]["documents"] > 0
    assert "mt1_validation" in seqio.MixtureRegistry.names()


def test_gin_file_alone_registers_the_mixture(corpus):
    out, vocab = corpus
    gin_utils.parse_gin(["gin_configs/data/massivetext.gin"], [f"register_massivetext_tasks.manifest='{out}'"])
    assert "%GOPHER_MASSIVETEXT_SAMPLING" in repr(gin.query_parameter("register_massivetext_tasks.weights"))
    assert data_tasks.register_for_training(vocab, verbose=False) == "massivetext"
    # Recorded for training without seqio (no TensorFlow once packed); seqio gets it on first use.
    assert len(training_data.mixture_tasks("massivetext")) == 4
    task_specs.ensure_seqio("massivetext")
    assert len(seqio.get_mixture_or_task("massivetext").tasks) == 4


@pytest.mark.parametrize("weights, match", [
    ({"massiveweb": -0.5, "books": 1.0}, r"register_massivetext_tasks.weights has negative"),
    ({"massiveweb": 0.0, "books": 0.0}, r"leaves no component with data"),
    ({"mssiveweb": 1.0}, r"unknown components \['mssiveweb'\]"),
    ({"c4": 1.0}, r"leaves no component with data"),
])
def test_bad_weights_name_the_binding(corpus, weights, match):
    out, vocab = corpus
    with pytest.raises(ValueError, match=match):
        massivetext.register_massivetext_tasks(vocab, manifest=out, weights=weights, verbose=False)


def test_missing_manifest_and_missing_shards_say_how_to_fix(corpus, tmp_path):
    out, vocab = corpus
    with pytest.raises(FileNotFoundError, match="data process"):
        massivetext.register_massivetext_tasks(vocab, manifest=str(tmp_path / "nowhere"), verbose=False)
    moved = tmp_path / "moved"
    shutil.copytree(out, moved)
    for f in glob.glob(str(moved / "books" / "train" / "*.tfrecord")):
        os.remove(f)
    with pytest.raises(ValueError, match=r"'books' split 'train': .* matches no file.*rerun"):
        massivetext.register_massivetext_tasks(vocab, manifest=str(moved), verbose=False)


def test_empty_component_is_an_error_naming_the_weight(tmp_path):
    # Two manifests: "massiveweb" as usual, and "books" whose every document went to validation.
    web, vocab = processed_corpus(str(tmp_path / "a"), slices={"massiveweb": (0, 40)})
    books, _ = processed_corpus(str(tmp_path / "b"), slices={"books": (40, 3)}, validation_fraction=0.999)
    manifest = json.load(open(os.path.join(books, "manifest.json")))
    assert manifest["components"]["books"]["splits"]["train"]["documents"] == 0
    with pytest.raises(ValueError, match="'books' has no training documents.*set its weight to 0"):
        massivetext.register_massivetext_tasks(vocab, manifest=[web, books], weights={"massiveweb": 1, "books": 1},
                                               verbose=False)
    # With its weight at 0 the same manifests register.
    assert massivetext.register_massivetext_tasks(vocab, manifest=[web, books], weights={"massiveweb": 1, "books": 0},
                                                  mixture_name="mt_web", verbose=False) == "mt_web"


def test_public_standins_register_without_downloading(corpus):
    _, vocab = corpus
    name = massivetext.register_public_standins(vocab, tfds_data_dir="/nonexistent")
    assert {t.name for t in seqio.get_mixture_or_task(name).tasks} == {"public_c4", "public_wikipedia", "public_pg19"}
    assert mixture.normalize_weights(massivetext.PUBLIC_SAMPLING)["pg19"] == pytest.approx(0.27 / 0.97)
