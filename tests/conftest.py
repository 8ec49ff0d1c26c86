"""Test setup: 8 emulated CPU devices, set before jax is imported anywhere."""
import os

# The CPU client aborts the process (LOG(FATAL)) when a collective's rendezvous waits longer than
# its terminate timeout. On 2 oversubscribed cores, 8 emulated devices plus a second pytest worker
# make a slow rendezvous normal: allow 5 minutes so slowness stays slowness. A real deadlock still
# ends the run; the one CI hit (devices of one tensor group entering different all-reduces of a
# pipeline slot) is fixed in the executor, see parallel/pipeline/executor.py `_in_order`.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + " --xla_force_host_platform_device_count=8"
    + " --xla_cpu_collective_call_terminate_timeout_seconds=300").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# One persistent XLA compilation cache for the whole session, shared by both xdist workers (they
# inherit the controller's environment) and by the `gopher-jax` processes tests start: dozens of
# tests compile the same tiny train step, and a hit loads it (jax caches compiles of >= 1 s only).
# An entry read while the other worker still writes it fails to load: a warning and a recompile.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import tempfile
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="gopher_jax_test_xla_cache_")
    os.environ["GOPHER_JAX_TEST_CACHE_OWNER"] = str(os.getpid())

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


def pytest_sessionfinish(session, exitstatus):
    """The process that made the compilation cache removes it (xdist workers leave it to the controller)."""
    if os.environ.get("GOPHER_JAX_TEST_CACHE_OWNER") == str(os.getpid()):
        import shutil
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


def pytest_sessionstart(session):
    n = jax.device_count()
    assert n == 8, f"tests need 8 CPU devices, got {n}: was jax imported before tests/conftest.py?"


import gin  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_gin():
    """Each test starts with no gin bindings: one test's gin files must not leak into the next."""
    gin.clear_config()
    yield
    gin.clear_config()
