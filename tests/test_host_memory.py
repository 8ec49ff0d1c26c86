"""Transparent huge pages for XLA's host buffers: the decision, the environment, the re-exec."""
import os
import subprocess
import sys

import pytest

from gopher_jax import host_memory


@pytest.mark.parametrize("text,mode", [("always [madvise] never\n", "madvise"),
                                       ("[always] madvise never\n", "always"),
                                       ("always madvise [never]\n", "never"), ("garbage", None)])
def test_thp_mode_reads_the_bracketed_word(tmp_path, text, mode):
    path = tmp_path / "enabled"
    path.write_text(text)
    assert host_memory.thp_mode(str(path)) == mode
    assert host_memory.thp_mode(str(tmp_path / "missing")) is None


def test_tunable_only_for_madvise_and_never_twice(monkeypatch):
    monkeypatch.setattr(host_memory, "_glibc_has_tunable", lambda: True)
    monkeypatch.setattr(host_memory.sys, "platform", "linux")
    assert host_memory.needs_tunable({}, mode="madvise")
    assert not host_memory.needs_tunable({}, mode="always")  # already huge pages for everything
    assert not host_memory.needs_tunable({}, mode="never")
    assert not host_memory.needs_tunable({host_memory.OPT_OUT: "0"}, mode="madvise")
    env = host_memory.with_tunable({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2", "A": "b"})
    assert env == {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1", "A": "b"}
    assert host_memory.active(env) and not host_memory.needs_tunable(env, mode="madvise")
    monkeypatch.setattr(host_memory, "_glibc_has_tunable", lambda: False)
    assert not host_memory.needs_tunable({}, mode="madvise")


def test_reexec_sets_the_tunable_exactly_when_the_host_wants_it():
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", host_memory.OPT_OUT)}
    child = ("import os, sys; from gopher_jax import host_memory as h; "
             "h.reexec_with_hugepages(['-c', 'import os; print(os.environ.get(\"GLIBC_TUNABLES\"))']); "
             "print('not restarted')")
    out = subprocess.run([sys.executable, "-c", child], env=env, capture_output=True, text=True, check=True).stdout
    if host_memory.needs_tunable(env):
        assert out.strip() == host_memory.TUNABLE
    else:
        assert out.strip() == "not restarted"
    env[host_memory.OPT_OUT] = "0"
    out = subprocess.run([sys.executable, "-c", child], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "not restarted"
