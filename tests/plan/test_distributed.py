"""maybe_initialize: which case applies, and errors that name the missing piece (no runtime started)."""
import pytest

from gopher_jax import distributed


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    monkeypatch.setattr(distributed, "_done", None)
    for k in ("GOPHER_JAX_COORDINATOR", "GOPHER_JAX_NUM_PROCESSES", "GOPHER_JAX_PROCESS_ID",
              "GOPHER_JAX_DISTRIBUTED", "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS"):
        monkeypatch.delenv(k, raising=False)
    calls = []
    monkeypatch.setattr(distributed.jax.distributed, "initialize", lambda **kw: calls.append(kw))
    return calls


def test_single_process_does_nothing(fresh, monkeypatch):
    monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "localhost")  # one host: nothing to coordinate
    assert distributed.maybe_initialize() == "single-process" and fresh == []
    assert distributed.maybe_initialize() == "already"


def test_explicit_from_env(fresh, monkeypatch):
    monkeypatch.setenv("GOPHER_JAX_COORDINATOR", "10.0.0.2:1234")
    monkeypatch.setenv("GOPHER_JAX_NUM_PROCESSES", "2")
    monkeypatch.setenv("GOPHER_JAX_PROCESS_ID", "1")
    assert distributed.maybe_initialize() == "explicit"
    assert fresh == [{"coordinator_address": "10.0.0.2:1234", "num_processes": 2, "process_id": 1}]


def test_tpu_auto(fresh, monkeypatch):
    monkeypatch.setenv("GOPHER_JAX_DISTRIBUTED", "auto")
    assert distributed.maybe_initialize() == "tpu-auto" and fresh == [{}]


@pytest.mark.parametrize("kwargs,match", [
    ({"coordinator": "h:1"}, "--num_processes"),
    ({"coordinator": "h", "num_processes": 2, "process_id": 0}, "needs a port"),
    ({"coordinator": "h:1", "num_processes": 2, "process_id": 2}, r"process_id=2 must be in \[0, num_processes=2\)"),
])
def test_errors_name_the_fix(fresh, kwargs, match):
    with pytest.raises(ValueError, match=match):
        distributed.maybe_initialize(**kwargs)
    assert fresh == []
