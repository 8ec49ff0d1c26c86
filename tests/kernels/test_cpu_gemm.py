"""CPU GEMM kernels (gopher_jax/kernels/cpu_gemm.cc, and mkl_gemm.cc through Intel oneMKL) and the
matmul_impl switch == XLA's dot.

Ragged shapes (none a multiple of the kernel's 12 x 32 tile, its 96 x 512 work items or its K
slices of 256 (fp32) / 512 (bf16), odd K for the bf16 pairs; (200, 1101, 600) spans several K
slices, row blocks and column blocks; (40, 4100, 70) is a small C over a deep K, which the kernel
splits over the threads by K). mkl_gemm packs the operand its blocks share once: op(B) for row
blocks ((130, 300, 97)), a bf16 op(A) for column blocks with an fp32 result ((200, 1101, 600),
(40, 4100, 70)); the fp32 and bf16 results below take both paths. No timing assertions: the probe's speed is what `auto` measures per host.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gopher_jax.kernels import cpu_gemm, matmul_impl, mkl_gemm
from gopher_jax.model.dense import matmul, matmul_transposed

F32_RTOL = 1e-6  # ||ours - xla|| / ||xla||: fp32 sums in another order
BF16_RTOL = 1e-2  # bf16 rounding of the result (8 mantissa bits: 2^-8 = 0.4% per element)
SHAPES = [(37, 53, 45), (13, 1, 70), (130, 300, 97), (200, 1101, 600), (40, 4100, 70)]  # (M, K, N)


def _rand(shape, dtype, seed):
    return jnp.asarray(np.random.RandomState(seed).randn(*shape), dtype)


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / np.linalg.norm(b)


KERNELS = matmul_impl.KERNELS


@pytest.mark.parametrize("kernel", KERNELS)
def test_kernel_is_available(kernel):
    """Both build here: g++ is on the machine and the test extra installs the `mkl` wheel."""
    assert KERNELS[kernel].available(), KERNELS[kernel].unavailable_reason()


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("m,k,n", SHAPES)
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_gemm_matches_xla(kernel, m, k, n, trans_a, trans_b, dtype):
    a = _rand((k, m) if trans_a else (m, k), dtype, 0)
    b = _rand((n, k) if trans_b else (k, n), dtype, 1)
    gemm = KERNELS[kernel].gemm
    ours, ours16 = jax.jit(lambda a, b: [gemm(a, b, trans_a=trans_a, trans_b=trans_b, out_dtype=o)
                                         for o in (jnp.float32, jnp.bfloat16)])(a, b)
    assert ours.shape == ours16.shape == (m, n) and (ours.dtype, ours16.dtype) == (jnp.float32, jnp.bfloat16)
    # The reference sums the same (bf16-exact) products in fp32: both are fp32-accurate.
    a32, b32 = a.astype(jnp.float32), b.astype(jnp.float32)
    ref = jnp.dot(a32.T if trans_a else a32, b32.T if trans_b else b32, precision="highest")
    assert _rel(ours, ref) < F32_RTOL
    # A bf16 result is the fp32 sums rounded once, to nearest even.
    np.testing.assert_array_equal(np.asarray(ours16), np.asarray(ours.astype(jnp.bfloat16)))


@pytest.mark.parametrize("m,n", [(1001, 7), (37, 301), (5, 1000)])
def test_mkl_splits_rows_or_columns_over_any_thread_count(monkeypatch, m, n):
    """mkl_gemm cuts C into row blocks (16-row granules) or column blocks (64 columns) that the
    threads take one by one: ragged last blocks, more threads than blocks, a bf16 result rounded
    from per-thread fp32 blocks of 256 rows."""
    monkeypatch.setenv("GOPHER_JAX_GEMM_THREADS", "3")
    a, b = _rand((m, 33), "bfloat16", 10), _rand((33, n), "bfloat16", 11)
    ref = jnp.dot(a.astype(jnp.float32), b.astype(jnp.float32), precision="highest")
    ours, ours16 = jax.jit(lambda a, b: [mkl_gemm.gemm(a, b, out_dtype=o) for o in (jnp.float32, jnp.bfloat16)])(a, b)
    assert _rel(ours, ref) < F32_RTOL
    np.testing.assert_array_equal(np.asarray(ours16), np.asarray(ours.astype(jnp.bfloat16)))


def test_mkl_says_how_to_install_it_when_it_is_missing(monkeypatch):
    monkeypatch.setattr(mkl_gemm, "library_path", lambda: None)
    monkeypatch.setattr(mkl_gemm, "_state", {})
    assert not mkl_gemm.available()
    assert "pip install 'gopher_jax[cpu]'" in mkl_gemm.unavailable_reason()
    with pytest.raises(RuntimeError, match=r"gopher_jax\[cpu\]"):
        mkl_gemm.gemm(jnp.ones((2, 2)), jnp.ones((2, 2)))


def test_gemm_of_empty_operands_is_zeros():
    assert cpu_gemm.gemm(jnp.ones((0, 4)), jnp.ones((4, 6))).shape == (0, 6)
    np.testing.assert_array_equal(cpu_gemm.gemm(jnp.ones((3, 0)), jnp.ones((0, 6))), np.zeros((3, 6)))


def test_gemm_rejects_bad_operands():
    with pytest.raises(ValueError, match="contracting sizes differ"):
        cpu_gemm.gemm(jnp.ones((3, 4)), jnp.ones((5, 6)))
    with pytest.raises(ValueError, match="must both be float32 or both bfloat16"):
        cpu_gemm.gemm(jnp.ones((3, 4)), jnp.ones((4, 6), jnp.bfloat16))


def _loss_and_grads(fn, impl, x, w, dy):
    """A Dense-style op's output and both gradients (dx, dW) for the upstream gradient dy."""
    y, vjp = jax.vjp(lambda x, w: fn(x, w, impl), x, w)
    return (y, *vjp(dy))


@pytest.mark.parametrize("impl", ["xla_f32acc", "cpu_gemm", "mkl"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("transposed", [False, True])
def test_matmul_forward_and_both_gradients_match_xla(impl, dtype, transposed):
    fn = matmul_transposed if transposed else matmul
    m, k, n = 130, 257, 97
    x = _rand((2, m // 2, k), dtype, 2)
    w = _rand((n, k) if transposed else (k, n), dtype, 3)
    dy = _rand((2, m // 2, n), dtype, 4)
    ours = jax.jit(lambda *a: _loss_and_grads(fn, impl, *a))(x, w, dy)
    if dtype == "float32":
        ref = jax.jit(lambda *a: _loss_and_grads(fn, "xla", *a))(x, w, dy)
        tol = F32_RTOL
    else:  # XLA's bf16 dot rounds differently; compare both to the exact-product fp32 result
        ref = jax.jit(lambda *a: _loss_and_grads(fn, "xla", *a))(*(t.astype(jnp.float32) for t in (x, w, dy)))
        tol = BF16_RTOL
    for name, o, r in zip(("y", "dx", "dW"), ours, ref):
        assert o.shape == r.shape and o.dtype == jnp.dtype(dtype), name
        assert _rel(o, r) < tol, (name, _rel(o, r))


@pytest.mark.parametrize("impl", ["xla", "xla_f32acc", "cpu_gemm", "mkl"])
@pytest.mark.parametrize("transposed", [False, True])
def test_fp32_master_weights_get_fp32_gradients(impl, transposed):
    """bf16 activations x fp32 weights (ModelConfig.dtype="bfloat16"): multiplied in bf16, dW in fp32,
    the output in the dtype asked for (the head's fp32 logits)."""
    fn = matmul_transposed if transposed else matmul
    m, k, n = 96, 130, 75
    x = _rand((m, k), "bfloat16", 7)
    w = _rand((n, k) if transposed else (k, n), "float32", 8)
    dy = _rand((m, n), "float32", 9)
    y, vjp = jax.vjp(lambda x, w: fn(x, w, impl, "float32"), x, w)
    dx, dw = vjp(dy)
    assert (y.dtype, dx.dtype, dw.dtype) == (jnp.float32, jnp.bfloat16, jnp.float32)
    x32, w32, dy16 = x.astype(jnp.float32), w.astype(jnp.bfloat16).astype(jnp.float32), dy.astype(jnp.bfloat16)
    ref = jax.vjp(lambda x, w: fn(x, w, "xla"), x32, w32)
    ref_y, (ref_dx, ref_dw) = ref[0], ref[1](dy16.astype(jnp.float32))
    for name, o, r in (("y", y, ref_y), ("dx", dx, ref_dx), ("dW", dw, ref_dw)):
        assert _rel(o, r) < BF16_RTOL, (name, _rel(o, r))
    if impl != "xla":  # fp32 sums, never rounded to bf16: as exact as the fp32 reference
        assert _rel(y, ref_y) < 1e-5 and _rel(dw, ref_dw) < 1e-5


def test_matmul_under_grad_of_jit_scan():
    """The custom call composes with scan (the layer stack) and nested grad like XLA's dot."""
    w = _rand((3, 40, 40), "float32", 5)
    x = _rand((7, 40), "float32", 6)

    def loss(w, impl):
        y, _ = jax.lax.scan(lambda h, wl: (jnp.tanh(matmul(h, wl, impl)), None), x, w)
        return jnp.sum(y ** 2)

    g_ours = jax.jit(jax.grad(lambda w: loss(w, "cpu_gemm")))(w)
    g_ref = jax.jit(jax.grad(lambda w: loss(w, "xla")))(w)
    assert _rel(g_ours, g_ref) < 1e-5


def test_auto_skips_the_probe_for_tiny_gemms(monkeypatch):
    monkeypatch.setattr(matmul_impl, "_probe", lambda *a: pytest.fail("probed a tiny GEMM"))
    assert matmul_impl.choose("bfloat16", 16, 32, 48) == "xla"


def test_auto_falls_back_to_xla_on_a_multi_device_mesh(monkeypatch):
    monkeypatch.setattr(matmul_impl, "MIN_PROBE_FLOPS", 0)
    assert jax.device_count() >= 2  # tests/conftest.py forces 8 CPU devices
    mesh = jax.make_mesh((jax.device_count(),), ("data",))
    with jax.set_mesh(mesh):
        assert matmul_impl.choose("bfloat16", 64, 32, 48) == "xla"
        for kernel in matmul_impl.KERNELS:
            with pytest.raises(ValueError, match="cannot shard"):
                matmul_impl.check_explicit(kernel)


def test_auto_falls_back_to_xla_off_cpu(monkeypatch):
    monkeypatch.setattr(matmul_impl, "MIN_PROBE_FLOPS", 0)
    monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
    assert matmul_impl.choose("float32", 64, 32, 48) == "xla"
    for kernel in matmul_impl.KERNELS:
        with pytest.raises(ValueError, match="platform is tpu"):
            matmul_impl.check_explicit(kernel)


def test_auto_falls_back_when_the_kernel_is_unavailable(monkeypatch, tmp_path):
    monkeypatch.setattr(matmul_impl, "MIN_PROBE_FLOPS", 0)
    monkeypatch.setattr(matmul_impl, "_disk_path", lambda: tmp_path / "probe.json")
    monkeypatch.setattr(matmul_impl, "_disk", None)
    monkeypatch.setattr(matmul_impl, "_decisions", {})
    monkeypatch.setattr(cpu_gemm._LIBRARY, "_state", {"ok": False, "reason": "test: no compiler"})
    monkeypatch.setattr(mkl_gemm, "_state", {"ok": False, "reason": "test: no mkl", "version": ""})
    assert matmul_impl.choose("float32", 24, 16, 8) == "xla"
    assert set(matmul_impl.decisions()[0]["gflops"]) == {"xla"}  # neither kernel was timed
    with pytest.raises(RuntimeError, match="test: no compiler"):
        matmul_impl.check_explicit("cpu_gemm")
    with pytest.raises(RuntimeError, match="test: no mkl"):
        matmul_impl.check_explicit("mkl")


def test_auto_probes_each_candidate_once_per_host(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(matmul_impl, "MIN_PROBE_FLOPS", 0)
    monkeypatch.setattr(matmul_impl, "_disk_path", lambda: tmp_path / "probe.json")
    monkeypatch.setattr(matmul_impl, "_disk", None)
    monkeypatch.setattr(matmul_impl, "_decisions", {})
    impl = matmul_impl.choose("bfloat16", 64, 48, 40, transposed_b=True)
    record, = matmul_impl.decisions()
    assert impl == record["impl"] in matmul_impl.IMPLS and not record["cached"]
    assert set(record["gflops"]) == {"xla", "xla_f32acc", "cpu_gemm", "mkl"}
    assert record["mkl_version"] == mkl_gemm.version() and "Math Kernel Library" in record["mkl_version"]
    assert all(g > 0 for g in record["gflops"].values())
    assert record["cpu_gemm_unit"] == cpu_gemm.bf16_unit() != "unavailable"  # what the kernel's bf16 ran on
    err = capsys.readouterr().err
    assert "matmul_impl=auto: bfloat16 64x48x40 nt" in err and f"cpu_gemm runs on {record['cpu_gemm_unit']}" in err
    # A new process on this host reads the decision instead of measuring again.
    monkeypatch.setattr(matmul_impl, "_disk", None)
    monkeypatch.setattr(matmul_impl, "_decisions", {})
    monkeypatch.setattr(matmul_impl, "_probe", lambda *a: pytest.fail("probed again"))
    assert matmul_impl.choose("bfloat16", 64, 48, 40, transposed_b=True) == impl
    assert matmul_impl.decisions()[0]["cached"]


@pytest.mark.parametrize("rates,speedups,expected", [
    ({"xla": 256e9, "cpu_gemm": 182e9}, {"xla": 1.0, "cpu_gemm": 1.49}, "xla"),  # paired ratio only: measured once
    ({"xla": 200e9, "cpu_gemm": 260e9}, {"xla": 1.0, "cpu_gemm": 0.9}, "xla"),  # best time only
    ({"xla": 200e9, "cpu_gemm": 260e9}, {"xla": 1.0, "cpu_gemm": 1.3}, "cpu_gemm"),  # both
    ({"xla": 200e9, "cpu_gemm": 205e9}, {"xla": 1.0, "cpu_gemm": 1.03}, "xla"),  # within the margin
    # MKL is tried first: a cpu_gemm probed faster is not picked over an MKL that beats XLA ...
    ({"xla": 200e9, "cpu_gemm": 700e9, "mkl": 640e9}, {"xla": 1.0, "cpu_gemm": 3.35, "mkl": 3.13}, "mkl"),
    # ... but is over one that does not.
    ({"xla": 200e9, "cpu_gemm": 700e9, "mkl": 205e9}, {"xla": 1.0, "cpu_gemm": 3.35, "mkl": 1.02}, "cpu_gemm"),
])
def test_a_kernel_must_beat_xla_on_the_paired_ratio_and_the_best_time(monkeypatch, tmp_path, rates, speedups,
                                                                      expected):
    monkeypatch.setattr(matmul_impl, "MIN_PROBE_FLOPS", 0)
    monkeypatch.setattr(matmul_impl, "_disk_path", lambda: tmp_path / "probe.json")
    monkeypatch.setattr(matmul_impl, "_disk", None)
    monkeypatch.setattr(matmul_impl, "_decisions", {})
    monkeypatch.setattr(matmul_impl, "_probe", lambda *a: (rates, speedups, "24x16x8"))
    assert matmul_impl.choose("float32", 24, 16, 8) == expected


def test_the_probe_starts_each_round_with_another_candidate(monkeypatch):
    """The first GEMM of a round ran slower; a fixed order made the first candidate ("xla") look slow."""
    order = []
    monkeypatch.setattr(matmul_impl, "candidates", lambda name: ["xla", "cpu_gemm", "mkl"])
    monkeypatch.setattr(matmul_impl, "dot", lambda x, w, impl, **kw: order.append(impl) or x)
    monkeypatch.setattr(matmul_impl.jax, "jit", lambda f: f)
    matmul_impl._probe(jnp.dtype("float32"), 8, 8, 8, False)
    calls = order[::3]  # each timed call runs three GEMMs (forward, dx, dW)
    rounds = [calls[3 * (1 + r):3 * (2 + r)] for r in range(matmul_impl._PROBE_REPS)]  # after the warm-up
    assert [r[0] for r in rounds[:3]] == ["xla", "cpu_gemm", "mkl"]
    assert all(sorted(r) == ["cpu_gemm", "mkl", "xla"] for r in rounds)


def test_reprobe_measures_again_and_keeps_the_other_shapes(monkeypatch, tmp_path):
    """GOPHER_JAX_MATMUL_REPROBE=1 re-times the shapes a process uses; the host's other entries stay."""
    monkeypatch.setattr(matmul_impl, "MIN_PROBE_FLOPS", 0)
    monkeypatch.setattr(matmul_impl, "_disk_path", lambda: tmp_path / "probe.json")
    probed = []

    def fake_probe(dtype, m, k, n, transposed_b):
        probed.append((m, k, n))
        return {"xla": 1e9}, {"xla": 1.0}, f"{m}x{k}x{n}"

    monkeypatch.setattr(matmul_impl, "_probe", fake_probe)

    def new_process(reprobe, *shapes):
        monkeypatch.setenv("GOPHER_JAX_MATMUL_REPROBE", reprobe)
        monkeypatch.setattr(matmul_impl, "_disk", None)
        monkeypatch.setattr(matmul_impl, "_decisions", {})
        for shape in shapes:
            assert matmul_impl.choose("float32", *shape) == "xla"

    new_process("", (24, 16, 8), (32, 16, 8))
    new_process("1", (24, 16, 8))
    assert probed == [(24, 16, 8), (32, 16, 8), (24, 16, 8)]
    new_process("", (24, 16, 8), (32, 16, 8))  # both read from the file
    assert len(probed) == 3


@pytest.mark.parametrize("tie_embeddings", [True, False])
def test_decoder_loss_and_gradients_with_the_kernel_equal_xla(tie_embeddings):
    """Every Dense and the output head through the kernel: same loss and parameter gradients."""
    from tests.model.helpers import init_params, small_config

    from gopher_jax.model.decoder import Decoder

    cfg = small_config(tie_embeddings=tie_embeddings, use_bias=True)
    params = init_params(cfg)
    tokens = jax.random.randint(jax.random.key(1), (2, 16), 0, cfg.vocab_size)

    def loss(params, impl):
        logits = Decoder(cfg.replace(matmul_impl=impl)).apply({"params": params}, tokens)
        return jnp.mean(jax.nn.log_softmax(logits)[..., 0])

    ours = jax.jit(jax.value_and_grad(lambda p: loss(p, "cpu_gemm")))(params)
    ref = jax.jit(jax.value_and_grad(lambda p: loss(p, "xla")))(params)
    assert ours[0] == pytest.approx(float(ref[0]), rel=1e-6)
    for (path, g), r in zip(jax.tree_util.tree_leaves_with_path(ours[1]), jax.tree_util.tree_leaves(ref[1])):
        assert _rel(g, r) < 1e-5, jax.tree_util.keystr(path)


def test_a_kernels_build_key_covers_the_headers_its_headers_include(tmp_path):
    """build.source_texts follows `#include "x.h"` through headers (simd_math.h is included by
    xent_row.h's users and by the sources), once each even when headers include each other."""
    from gopher_jax.kernels import build
    (tmp_path / "k.cc").write_text('#include "a.h"\n#include <vector>\n')
    (tmp_path / "a.h").write_text('#include "b.h"\n')
    (tmp_path / "b.h").write_text('#include "a.h"\n#include "missing.h"\n// b\n')
    assert build.source_texts(tmp_path / "k.cc") == (b'#include "a.h"\n#include <vector>\n', b'#include "b.h"\n',
                                                      b'#include "a.h"\n#include "missing.h"\n// b\n')
