"""Test setup: 8 emulated CPU devices, set before jax is imported anywhere."""
import gc
import os
import shutil

# The CPU client aborts the process (LOG(FATAL)) when a collective's rendezvous waits longer than
# its terminate timeout. On 2 oversubscribed cores, 8 emulated devices plus a second pytest worker
# make a slow rendezvous normal: allow 5 minutes so slowness stays slowness. A real deadlock still
# ends the run; the one CI hit (devices of one tensor group entering different all-reduces of a
# pipeline slot) is fixed in the executor, see parallel/pipeline/executor.py `_in_order`.
#
# COMPILE_FLAGS: this suite compiles hundreds of small programs that then run a step or two, so it trades
# the speed of the machine code for the speed of the compile. Backend optimisation level 0: LLVM's code
# generation was most of a CPU compile; at level 0 it compiles about twice as fast. The legacy elemental
# fusion emitters instead of XLA:CPU's MLIR fusion emitters: the same fusions (the HLO, what the program
# computes, is unchanged), emitted without the MLIR pipeline, another ~1/3 less compile CPU (measured on
# tests/model/test_variants.py + test_causality.py + two pipeline cases: 53.6 / 58.0 -> 35.6 / 37.3 CPU-s).
# Either can move a float's last bit, so every process a test compares bit for bit gets COMPILE_FLAGS
# (tests/plan/test_multiprocess.py, tests/reliability/test_kill_resume.py). `gopher-jax` subprocesses that
# train for many steps (a user's run) drop XLA_FLAGS and compile as a user's process does.
COMPILE_FLAGS = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
# Under `-n N` with N workers on N cores, each worker runs on a core of its own, and so do the processes
# its tests start: two workers each running a thread per core (XLA's pools, the CPU kernels' helpers) put
# four busy threads on two cores, and the switching cost ~5% (tests/train/test_train_cli.py + the pipeline
# step and memory tests, -n 2, both orders: 224, 225 s free against 211, 214 s pinned). Tests that run
# several processes at once (MULTI_PROCESS, below) get every core back for their duration, or their hosts
# would share one core.
_ALL_CORES = _OWN_CORE = None  # set only in a pinned worker
if os.environ.get("PYTEST_XDIST_WORKER", "").startswith("gw") and hasattr(os, "sched_setaffinity"):
    _cores = sorted(os.sched_getaffinity(0))
    if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0")) == len(_cores) > 1:
        _ALL_CORES = set(_cores)
        _OWN_CORE = {_cores[int(os.environ["PYTEST_XDIST_WORKER"][2:]) % len(_cores)]}
        os.sched_setaffinity(0, _OWN_CORE)
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + " --xla_force_host_platform_device_count=8"
    + " --xla_cpu_collective_call_terminate_timeout_seconds=300"
    + " " + COMPILE_FLAGS).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Every `gopher-jax train` measures the host's matmul peak at start-up (1 s by default); the suite
# starts ~50 of them and asserts MFU's definition, not its value on a shared machine.
os.environ.setdefault("GOPHER_JAX_PEAK_SECONDS", "0.2")
# One persistent XLA compilation cache for the whole session, shared by both xdist workers (they
# inherit the controller's environment) and by the `gopher-jax` processes tests start: dozens of
# tests compile the same tiny train step, and a hit loads it (jax caches compiles of >= 1 s only).
# An entry read while the other worker still writes it fails to load: a warning and a recompile.
# Every compile is cached, not only those of >= 1 s (jax's default): the suite's many sub-second compiles
# repeat across tests and processes (tests/model + tests/eval on 2 workers, two runs in both orders: 106 -> 97
# and 114 -> 103 user CPU-s).
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import tempfile
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="gopher_jax_test_xla_cache_")
    os.environ["GOPHER_JAX_TEST_CACHE_OWNER"] = str(os.getpid())

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

# Python's cyclic garbage collector at its default thresholds ran ~8% of a pipeline test's CPU samples
# (`perf`: gc_collect_main and its visits over the objects jax's tracing makes). Collected 1,000 times less
# often: test_pipeline_step.py's zero_bubble_pp4_remat_full_fitted, alternating, 28.6 and 28.3 s against
# 27.4 and 26.7 s wall.
gc.set_threshold(100_000, 50, 1000)


def pytest_sessionfinish(session, exitstatus):
    """The process that made the compilation cache removes it (xdist workers leave it to the controller)."""
    if os.environ.get("GOPHER_JAX_TEST_CACHE_OWNER") == str(os.getpid()):
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


def pytest_sessionstart(session):
    n = jax.device_count()
    assert n == 8, f"tests need 8 CPU devices, got {n}: was jax imported before tests/conftest.py?"


import gin  # noqa: E402
import pytest  # noqa: E402

# Tests that start several processes at once (hosts of one run, sweep workers, a Ray cluster).
MULTI_PROCESS = ("tests/plan/test_distributed.py::", "tests/plan/test_multiprocess.py::", "tests/sweep/")


def pytest_runtest_setup(item):
    """A MULTI_PROCESS test's processes start on every core. Affinity is per thread on Linux and inherited
    when a thread or process is made, so only this thread and what it starts move: the CPU client's
    threads, made at start-up, stay on the worker's core."""
    if _ALL_CORES and item.nodeid.startswith(MULTI_PROCESS):
        os.sched_setaffinity(0, _ALL_CORES)


def pytest_runtest_teardown(item):
    """Back on the worker's own core after a MULTI_PROCESS test."""
    if _OWN_CORE and item.nodeid.startswith(MULTI_PROCESS):
        os.sched_setaffinity(0, _OWN_CORE)


@pytest.fixture(autouse=True)
def _fresh_gin():
    """Each test starts with no gin bindings: one test's gin files must not leak into the next."""
    gin.clear_config()
    yield
    gin.clear_config()


# -- scheduling under pytest-xdist (README command 2: `-n 2`) ------------------------------------------------
#
# xdist's default `--dist load` hands tests out in chunks of consecutive tests, so two tests that share a
# module- or session-scoped fixture (a trained run, a compiled program, a finished sweep) often land on
# different workers, and each worker builds the fixture. For `-n N` without --dist, the run uses the
# scheduler below instead: every test that uses a module/session-scoped fixture defined under tests/ goes
# to one worker together with the other users of that fixture (one work unit, built once); units go out
# largest first, then the tests without shared fixtures one by one, the known-slow ones first, so that
# no long test starts last while the other worker idles. This changes which worker runs a test and when,
# never whether it runs. (xdist's own `--dist loadgroup` marks do not work with pytest 9: it renames
# items through an attribute pytest 9 no longer reads.)
#
# The workers collect (the controller does not), so each worker writes {test id: unit} to a file the
# controller named, and the controller's scheduler reads it once every worker has collected.

# Known-slow tests without shared fixtures (node id prefixes), started first. A stale entry only changes
# the order.
SLOW_FIRST = (
    "tests/data/test_massivetext_e2e.py::",
    "tests/plan/test_distributed.py::test_sigterm_to_one_host",
    "tests/plan/test_multiprocess.py::",
    "tests/train/test_train_cli.py::test_tiny_model_learns",
    "tests/sweep/test_kill_resume.py::",
    "tests/data/test_beam_components.py::test_million_edge_graph",
    "tests/reliability/test_kill_resume.py::",
    "tests/reliability/test_resume_after_config_change.py::",
    "tests/model/test_attention_impl.py::",
    "tests/data/test_corpus_beam.py::",
    "tests/train/test_token_budget.py::test_the_loop_trains",
    "tests/plan/test_plan.py::test_plan_prices_ops_by_compiling_them",
    "tests/model/test_variants.py::test_remat_policies",
    "tests/train/test_train_cli.py::",
    "tests/reliability/test_rewind.py::",
    "tests/eval/test_decode.py::",
)
_UNITS_FILE = "gopher_jax_units_file"


def _shared_fixture_keys(item) -> set:
    """The module/session-scoped fixtures defined under tests/ that `item` uses (its fixture closure)."""
    info = getattr(item, "_fixtureinfo", None)
    keys = set()
    for name in getattr(info, "names_closure", ()):
        defs = info.name2fixturedefs.get(name) or ()
        for d in defs[-1:]:  # the definition that applies to this item
            if d.scope == "function" or not d.baseid.startswith("tests"):
                continue
            keys.add(item.nodeid.split("::")[0] if d.scope == "module" else f"{d.baseid}::{d.argname}")
    return keys


def _units(items) -> dict:
    """{test id: work unit}: tests that share a module/session fixture (transitively) share a unit."""
    parent = {}

    def find(k):
        while parent.setdefault(k, k) != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    item_keys = [sorted(_shared_fixture_keys(item)) for item in items]
    for keys in item_keys:
        for k in keys[1:]:
            parent[find(k)] = find(keys[0])
    return {item.nodeid: find(keys[0]) if keys else item.nodeid for item, keys in zip(items, item_keys)}


def _units_path(config) -> str:
    """The controller's file for the work units (made once; the workers write it)."""
    if not hasattr(config, "_gopher_jax_units"):
        import tempfile
        path = os.path.join(tempfile.mkdtemp(prefix="gopher_jax_xdist_"), "units.json")
        config._gopher_jax_units = path
        config.add_cleanup(lambda: shutil.rmtree(os.path.dirname(path), ignore_errors=True))
    return config._gopher_jax_units


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """xdist's controller, before starting a worker: where to write the work units (`-n N` only)."""
    if node.config.getvalue("dist") == "load":
        node.workerinput[_UNITS_FILE] = _units_path(node.config)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "load":  # an explicit --dist other than load is left alone
        return None
    import json

    from xdist.scheduler import LoadScopeScheduling
    path = _units_path(config)

    class SharedFixtureScheduling(LoadScopeScheduling):
        """xdist's loadscope, with the work units of `_units` (one test when it shares no fixture)."""
        units = None

        def _split_scope(self, nodeid):
            if self.units is None:
                try:
                    with open(path) as f:
                        self.units = json.load(f)
                except (OSError, ValueError):  # no worker wrote it: one test per unit, as `load` does
                    self.units = {}
            return self.units.get(nodeid, nodeid)

    return SharedFixtureScheduling(config, log)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    path = getattr(config, "workerinput", {}).get(_UNITS_FILE)
    if not path:
        return
    units = _units(items)
    shared = {u for n, u in units.items() if u != n}

    def rank(item):
        if units[item.nodeid] in shared:
            return -1  # stays where it is, beside the other users of its fixture
        return next((i for i, p in enumerate(SLOW_FIRST) if item.nodeid.startswith(p)), len(SLOW_FIRST))
    items.sort(key=rank)  # stable: collection order within a rank
    import json
    tmp = f"{path}.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(units, f)
    os.replace(tmp, path)  # every worker collects the same tests and writes the same units


# -- where the suite's CPU goes -------------------------------------------------------------------------------
#
# With GOPHER_JAX_TEST_CPU_LOG=FILE, every test appends {"test", "cpu_s", "wall_s", "worker"} to FILE: the CPU
# seconds of its setup, call and teardown in this process plus the child processes it waited for. CPU time,
# unlike wall time, barely moves with the load of the other worker, so it ranks what to make cheaper.
_CPU_LOG = os.environ.get("GOPHER_JAX_TEST_CPU_LOG")


def _cpu_seconds() -> float:
    import resource
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if not _CPU_LOG:
        yield
        return
    import json
    import time
    cpu, wall = _cpu_seconds(), time.perf_counter()
    yield
    record = {"test": item.nodeid, "cpu_s": round(_cpu_seconds() - cpu, 3), "wall_s": round(time.perf_counter() - wall, 3),
              "worker": os.environ.get("PYTEST_XDIST_WORKER", "main")}
    with open(_CPU_LOG, "a") as f:
        f.write(json.dumps(record) + "\n")
