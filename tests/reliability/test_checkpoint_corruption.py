"""Corrupt or partial checkpoints are detected at restore, reported by step and file, moved aside
(never deleted) and the previous good one is used; orbax never deletes the old before the new is complete."""
import glob
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gopher_jax.train.checkpoint_integrity import MANIFEST_NAME
from gopher_jax.train.checkpoints import Checkpointer


def _state(v):
    return {"w": jnp.full((64, 16), float(v)), "step": jnp.asarray(v, jnp.int32)}


@pytest.fixture()
def env():
    mesh = Mesh(np.array(jax.devices()[:1]), ("d",))
    rep = NamedSharding(mesh, PartitionSpec())
    abstract = jax.eval_shape(lambda: _state(0))
    return abstract, jax.tree.map(lambda _: rep, abstract)


def _write(workdir, steps=(1, 2, 3)):
    ck = Checkpointer(str(workdir), keep=5)
    for s in steps:
        ck.save(s, _state(s), {"batches_consumed": s})
    ck.close()
    return os.path.join(str(workdir), "checkpoints")


def _restore(workdir, env):
    messages = []
    ck = Checkpointer(str(workdir), keep=5)
    found = ck.restore_newest_good(*env, report=messages.append)
    ck.close()
    return found, messages


def _biggest_file(step_dir):
    files = [p for p in glob.glob(os.path.join(step_dir, "state", "**", "*"), recursive=True) if os.path.isfile(p)]
    return max(files, key=os.path.getsize)


def test_intact_checkpoints_restore_the_newest(tmp_path, env):
    root = _write(tmp_path)
    assert all(os.path.exists(os.path.join(root, str(s), MANIFEST_NAME)) for s in (1, 2, 3))
    (step, state, data), messages = _restore(tmp_path, env)
    assert step == 3 and data["batches_consumed"] == 3 and float(state["w"][0, 0]) == 3.0 and not messages


def test_truncated_file_is_named_and_the_previous_step_used(tmp_path, env):
    root = _write(tmp_path)
    victim = _biggest_file(os.path.join(root, "3"))
    with open(victim, "r+b") as f:
        f.truncate(10)
    (step, state, _), messages = _restore(tmp_path, env)
    assert step == 2 and float(state["w"][0, 0]) == 2.0
    assert "checkpoint step 3 is corrupt or partial" in messages[0] and os.path.basename(victim) in messages[0]
    assert "truncated" in messages[0] and "falling back to step 2" in messages[0]
    moved = glob.glob(str(tmp_path / "checkpoints_corrupt" / "3.*"))
    assert moved and os.path.exists(os.path.join(moved[0], MANIFEST_NAME))  # kept, not deleted
    assert sorted(os.listdir(root)) == ["1", "2"]


@pytest.mark.parametrize("damage", ["missing_state_item", "missing_data_item", "junk_data_json"])
def test_missing_or_broken_item_falls_back(tmp_path, env, damage):
    root = _write(tmp_path)
    d = os.path.join(root, "3")
    if damage == "missing_state_item":
        shutil.rmtree(os.path.join(d, "state"))
    elif damage == "missing_data_item":
        shutil.rmtree(os.path.join(d, "data"))
    else:
        with open(os.path.join(d, "data", "metadata"), "w") as f:
            f.write("{not json")
    (step, _, _), messages = _restore(tmp_path, env)
    assert step == 2
    assert "checkpoint step 3" in messages[0] and os.path.join(d, "") in messages[0] + os.sep


def test_unsealed_checkpoint_damage_is_caught_by_orbax_errors(tmp_path, env):
    root = _write(tmp_path)
    os.remove(os.path.join(root, "3", MANIFEST_NAME))  # e.g. killed right after the save committed
    with open(os.path.join(root, "3", "state", "manifest.ocdbt"), "r+b") as f:
        f.truncate(5)
    (step, _, _), messages = _restore(tmp_path, env)
    assert step == 2 and "manifest.ocdbt" in messages[0]


def test_interrupted_write_is_ignored_and_kept(tmp_path, env):
    root = _write(tmp_path)
    os.rename(os.path.join(root, "3"), os.path.join(root, "3.orbax-checkpoint-tmp"))  # killed mid-write
    (step, _, _), messages = _restore(tmp_path, env)
    assert step == 2 and "interrupted save" in messages[0] and "3.orbax-checkpoint-tmp" in messages[0]
    assert glob.glob(str(tmp_path / "checkpoints_corrupt" / "3.orbax-checkpoint-tmp.*"))


def test_all_corrupt_raises_and_nothing_is_deleted(tmp_path, env):
    root = _write(tmp_path, steps=(1, 2))
    for s in (1, 2):
        with open(os.path.join(root, str(s), "data", "metadata"), "w") as f:
            f.write("")
    with pytest.raises(RuntimeError, match=r"none of the checkpoints \[2, 1\]"):
        _restore(tmp_path, env)
    assert len(os.listdir(tmp_path / "checkpoints_corrupt")) == 2


def test_max_to_keep_deletes_old_checkpoints_only_after_the_new_one_is_complete(tmp_path):
    ck = Checkpointer(str(tmp_path), keep=1)
    root = ck.directory
    ck.save(1, _state(1), {"batches_consumed": 1})
    ck.wait()
    ck.save(2, _state(2), {"batches_consumed": 2})  # async: still being written
    listing = os.listdir(root)
    if "2" not in listing:  # in flight: step 1 must still be there
        assert "1" in listing, listing
    ck.close()
    assert sorted(os.listdir(root)) == ["2"]
    with open(os.path.join(root, "2", MANIFEST_NAME)) as f:
        assert json.load(f)["files"]
