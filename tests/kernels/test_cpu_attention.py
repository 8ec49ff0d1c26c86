"""Fused CPU attention kernel (gopher_jax/kernels/cpu_attention.cc) == the pure-jnp reference.

Small shapes only (the kernel is built once per machine into ~/.cache/gopher_jax/kernels; a cold
build takes ~10 s of g++). No timing assertions: see benchmarks/attention_kernel.py for speed.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gopher_jax.kernels import cpu_attention as ca

RTOL = 2e-5  # max |kernel - reference| / max |reference|, per output and per gradient


def _inputs(b, t, h, kh, d, *, rel=False, alibi=False, packed=False, seed=0):
    r = np.random.RandomState(seed)
    f = lambda *s: jnp.asarray(r.randn(*s), jnp.float32)  # noqa: E731
    q, k, v = f(b, t, h, d), f(b, t, kh, d), f(b, t, kh, d)
    seg = np.ones((b, t), np.int32)
    if packed:  # several documents per row, then padding (segment 0) at the end
        for i in range(b):
            cuts = np.sort(r.choice(np.arange(1, t - 3), size=3, replace=False))
            seg[i] = np.searchsorted(cuts, np.arange(t), side="right") + 1
            seg[i, t - 3:] = 0
    kw = dict(scale=float(d) ** -0.5)
    diff = [q, k, v]
    if rel:
        diff += [f(b, t, h, d), f(t, h, d)]
    if alibi:
        kw["alibi_slopes"] = jnp.asarray(r.uniform(0.01, 0.5, size=h), jnp.float32)
    return diff, jnp.asarray(seg), kw


def _fn(attn, seg, kw):
    def out(*a):
        extra = dict(q_pos=a[3], rel_keys=a[4]) if len(a) == 5 else {}
        return attn(a[0], a[1], a[2], seg, **kw, **extra)
    return out


def _value_and_grads(attn, diff, seg, kw):
    out = _fn(attn, seg, kw)
    w = jnp.asarray(np.random.RandomState(1).randn(*diff[0].shape), jnp.float32)

    def loss(*a):
        o = out(*a)
        return jnp.sum(o * w) + 0.1 * jnp.sum(jnp.sin(o)), o

    (_, o), g = jax.jit(jax.value_and_grad(loss, argnums=tuple(range(len(diff))), has_aux=True))(*diff)
    return o, g


def _assert_close(a, b, what):
    err = float(jnp.max(jnp.abs(a - b)))
    ref = float(jnp.max(jnp.abs(b))) + 1e-6
    assert err <= RTOL * ref, f"{what}: max abs diff {err} vs max |ref| {ref}"


def _compare(diff, seg, kw):
    o1, g1 = _value_and_grads(ca.fused_causal_attention, diff, seg, kw)
    o2, g2 = _value_and_grads(ca.reference_causal_attention, diff, seg, kw)
    _assert_close(o1, o2, "out")
    for name, x, y in zip(("dq", "dk", "dv", "dq_pos", "drel_keys"), g1, g2):
        _assert_close(x, y, name)


def test_kernel_is_available():
    assert ca.available(), ca.unavailable_reason()
    assert ca.unavailable_reason() == ""


CASES = {
    # name: (b, t, h, kh, d, rel, alibi, packed)
    "mha": (2, 80, 2, 2, 32, False, False, False),
    "mha_rel": (2, 70, 2, 2, 32, True, False, False),
    "gqa_rel_packed": (3, 96, 4, 2, 16, True, False, True),
    "mqa_alibi": (1, 130, 4, 1, 32, False, True, False),
    "mqa_rel_alibi_packed": (2, 66, 4, 1, 8, True, True, True),
    "odd_t37_d40_rel_packed": (3, 37, 2, 2, 40, True, False, True),
    "gqa_t37_alibi_packed": (2, 37, 4, 2, 24, False, True, True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_matches_reference(case):
    b, t, h, kh, d, rel, alibi, packed = CASES[case]
    diff, seg, kw = _inputs(b, t, h, kh, d, rel=rel, alibi=alibi, packed=packed)
    _compare(diff, seg, kw)


@pytest.mark.parametrize("case", ["gqa_rel_packed", "mqa_rel_alibi_packed"])
def test_matches_reference_unpartitioned(case, monkeypatch):
    """Without batch partitioning (the default on one device) the kernel sums d rel_keys over the
    batch itself, in per-chunk partials when there are few kv heads."""
    monkeypatch.setenv("GOPHER_JAX_ATTN_PARTITION", "0")
    b, t, h, kh, d, rel, alibi, packed = CASES[case]
    diff, seg, kw = _inputs(b, t, h, kh, d, rel=rel, alibi=alibi, packed=packed, seed=5)
    _compare(diff, seg, kw)


def _scan_model(b, t, h, kh, d, layers, seed=3, constrain=None):
    """A scanned, rematerialised stack of attention layers (like the model) and its inputs."""
    r = np.random.RandomState(seed)
    x = jnp.asarray(r.randn(b, t, h, d), jnp.float32)
    wq, wk, wv, wp = (jnp.asarray(r.randn(layers, d, d) / np.sqrt(d), jnp.float32) for _ in range(4))
    rel = jnp.asarray(r.randn(layers, t, h, d), jnp.float32)
    seg = jnp.asarray(np.repeat(np.array([[1] * (t - t // 3) + [2] * (t // 3)]), b, 0), jnp.int32)

    def model(attn, x, wq, wk, wv, wp, rel, seg):
        @jax.checkpoint
        def layer(x, p):
            wq_, wk_, wv_, wp_, rel_ = p
            if constrain is not None:
                x = jax.lax.with_sharding_constraint(x, constrain)
            q = x @ wq_
            kv = x.reshape(b, t, kh, h // kh, d).mean(3)
            y = attn(q, kv @ wk_, kv @ wv_, seg, scale=d ** -0.5, q_pos=x @ wp_, rel_keys=rel_)
            return x + y, None

        y, _ = jax.lax.scan(layer, x, (wq, wk, wv, wp, rel))
        return jnp.sum(jnp.tanh(y))

    def value_and_grad(attn):
        return jax.jit(jax.value_and_grad(lambda *a: model(attn, *a), argnums=(0, 1, 2, 3, 4, 5)))

    return value_and_grad, [x, wq, wk, wv, wp, rel, seg]


def _assert_same_value_and_grads(got, want):
    (v1, g1), (v2, g2) = got, want
    assert abs(float(v1) - float(v2)) <= 1e-4 * abs(float(v2))
    for i, (a, c) in enumerate(zip(g1, g2)):
        _assert_close(a, c, f"grad {i}")


def test_inside_jit_scan_checkpoint():
    """Layers are scanned and rematerialised in the model: same result/grads as the reference."""
    value_and_grad, args = _scan_model(2, 40, 4, 2, 16, layers=3)
    _assert_same_value_and_grads(value_and_grad(ca.fused_causal_attention)(*args),
                                 value_and_grad(ca.reference_causal_attention)(*args))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_falls_back_when_unavailable(monkeypatch, dtype):
    diff, seg, kw = _inputs(1, 20, 2, 1, 16, rel=True)
    diff = [x.astype(dtype) for x in diff]
    monkeypatch.setattr(ca._LIBRARY, "_state", {"ok": False, "reason": "forced by test"})
    assert not ca.available()
    assert ca.unavailable_reason() == "forced by test"
    jaxpr = str(jax.make_jaxpr(_fn(ca.fused_causal_attention, seg, kw))(*diff))
    assert "ffi" not in jaxpr and "custom_vjp" not in jaxpr
    assert jaxpr == str(jax.make_jaxpr(_fn(ca.reference_causal_attention, seg, kw))(*diff))


def test_kernel_path_is_used():
    diff, seg, kw = _inputs(1, 20, 2, 1, 16)
    jaxpr = str(jax.make_jaxpr(_fn(ca.fused_causal_attention, seg, kw))(*diff))
    assert "custom_vjp" in jaxpr
    hlo = jax.jit(_fn(ca.fused_causal_attention, seg, kw)).lower(*diff).as_text()
    assert ca._FWD_TARGET in hlo


def test_batch_sharded_over_mesh():
    """Batch sharded over 'data' of a data x tensor mesh, inside jit + scan + checkpoint: each
    device runs the kernel on its own batch rows (custom_partitioning: no all-gather of the
    batch; heads sharded over 'tensor' are gathered), and values/gradients match the reference."""
    from jax.sharding import NamedSharding, PartitionSpec as P

    n = jax.device_count()
    mesh = jax.make_mesh((n // 2, 2), ("data", "tensor"),
                         axis_types=(jax.sharding.AxisType.Auto,) * 2)
    b, t, h, kh, d = n, 24, 4, 2, 16
    value_and_grad, args = _scan_model(b, t, h, kh, d, layers=2, seed=4,
                                       constrain=NamedSharding(mesh, P("data", None, "tensor")))
    batch = NamedSharding(mesh, P("data"))
    sharded = [jax.device_put(args[0], batch), *args[1:6], jax.device_put(args[6], batch)]
    compiled = value_and_grad(ca.fused_causal_attention).lower(*sharded).compile()
    _assert_same_value_and_grads(compiled(*sharded),
                                 value_and_grad(ca.reference_causal_attention)(*args))
    local = f"f32[{b // (n // 2)},{t},{h},{d}]"
    calls = [line for line in compiled.as_text().splitlines()
             if "custom-call(" in line and ca._FWD_TARGET in line]
    assert calls and all(local in line.split("custom-call(")[0] for line in calls), calls


# NaN and Inf must come out of the kernel as NaN/Inf (it is built without finite-math assumptions):
# the spike guard can only drop a bad update it sees. Poisoned q or k rows give exactly the reference's
# non-finite pattern; other rows (earlier positions, other documents, other heads) stay finite.
@pytest.mark.parametrize("where,value", [("q", np.nan), ("k", np.nan), ("q", np.inf), ("k", -np.inf)])
def test_nan_and_inf_propagate_like_the_reference(where, value):
    (q, k, v), seg, kw = _inputs(2, 80, 2, 2, 32, packed=True, seed=7)
    poisoned = {"q": np.array(q), "k": np.array(k), "v": np.array(v)}
    pos = int(np.argmax(np.asarray(seg)[0] == np.asarray(seg)[0, 20])) + 1  # 2nd token of a document of row 0
    poisoned[where][0, pos, 1, 3] = value
    args = [jnp.asarray(poisoned[n]) for n in ("q", "k", "v")]
    o1, g1 = _value_and_grads(ca.fused_causal_attention, args, seg, kw)
    o2, g2 = _value_and_grads(ca.reference_causal_attention, args, seg, kw)
    bad = ~np.isfinite(np.asarray(o2))
    assert bad.any() and not bad.all()
    np.testing.assert_array_equal(~np.isfinite(np.asarray(o1)), bad)
    np.testing.assert_array_equal(np.isnan(np.asarray(o1)), np.isnan(np.asarray(o2)))
    for name, a, b in zip(("dq", "dk", "dv"), g1, g2):
        assert bool(jnp.any(~jnp.isfinite(a))) == bool(jnp.any(~jnp.isfinite(b))), name
    _assert_close(jnp.where(bad, 0.0, o1), jnp.where(bad, 0.0, o2), "finite rows")


def test_nan_through_the_fused_kernel_is_a_nan_loss_the_spike_guard_drops():
    """One NaN weight of layer 0's key projection makes every key of head 0 NaN; only attention reads
    the keys, so the loss is NaN only if the kernel passes NaN on. The guard then drops the update."""
    import dataclasses

    from gopher_jax.parallel.mesh import MeshConfig, build_mesh
    from gopher_jax.parallel.rules import DEFAULT_RULES
    from gopher_jax.train.config import TrainConfig
    from gopher_jax.train.sharded import build_trainer
    from tests.train.helpers import MODEL, OPTIMIZER, batch

    model = dataclasses.replace(MODEL, attention_impl="cpu_fused")
    trainer = build_trainer(model, OPTIMIZER, TrainConfig(steps=10, batch_size=8, seq_len=16, spike_policy="skip"),
                            build_mesh(MeshConfig(data=-1), jax.devices()[:1]), DEFAULT_RULES)
    key_path = "['layers']['attention']['key']['kernel']"
    with trainer.context():
        state = trainer.init()
        params = jax.tree_util.tree_map_with_path(
            lambda p, x: x.at[0, 0, 0, 0].set(jnp.nan) if jax.tree_util.keystr(p) == key_path else x, state.params)
        state = state.replace(params=params)
        before = jax.device_get(state.params)
        the_batch = trainer.put_batch(batch())
        assert ca._FWD_TARGET in trainer.train_step.lower(state, the_batch).as_text()  # the kernel runs
        state, metrics = trainer.train_step(state, the_batch)
    assert np.isnan(float(metrics["loss"]))
    assert float(metrics["update_skipped"]) == 1.0 and float(metrics["skipped_updates"]) == 1.0
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.params), before)  # update dropped


# -- bf16 path -------------------------------------------------------------------------------------
# bf16 q, k, v, q_pos run the kernel's bf16 GEMMs (fp32 sums and softmax). Compared with XLA's
# attention (the pure-jnp reference, fp32 maths) on the same bf16-rounded inputs, every output and
# gradient must be within a few bf16 roundings of the largest value: an error in the pair packing
# or a transposed operand gives O(1) errors, bf16 rounding of P and dS gives ~2-6e-3 here.
BF16_RTOL = 2e-2
BF16_CASES = ["mha_rel", "gqa_rel_packed", "mqa_rel_alibi_packed", "odd_t37_d40_rel_packed",
              "gqa_t37_alibi_packed"]


def _compare_bf16(case, seed=0):
    b, t, h, kh, d, rel, alibi, packed = CASES[case]
    diff, seg, kw = _inputs(b, t, h, kh, d, rel=rel, alibi=alibi, packed=packed, seed=seed)
    bf = [x.astype(jnp.bfloat16) if i < 4 else x for i, x in enumerate(diff)]  # rel_keys stays fp32
    o1, g1 = _value_and_grads(ca.fused_causal_attention, bf, seg, kw)
    o2, g2 = _value_and_grads(ca.reference_causal_attention, [x.astype(jnp.float32) for x in bf], seg, kw)
    assert o1.dtype == jnp.bfloat16 and [g.dtype for g in g1] == [x.dtype for x in bf]
    for name, x, y in zip(("out", "dq", "dk", "dv", "dq_pos", "drel_keys"), (o1, *g1), (o2, *g2)):
        err = float(jnp.max(jnp.abs(x.astype(jnp.float32) - y)))
        ref = float(jnp.max(jnp.abs(y)))
        assert err <= BF16_RTOL * ref, f"{case} {name}: max abs diff {err} vs max |ref| {ref}"
    return bf, seg, kw


@pytest.mark.parametrize("case", BF16_CASES)
def test_bf16_matches_xla_attention(case):
    bf, seg, kw = _compare_bf16(case)
    hlo = jax.jit(_fn(ca.fused_causal_attention, seg, kw)).lower(*bf).as_text()
    calls = [ln for ln in hlo.splitlines() if ca._FWD_TARGET in ln and "custom_call" in ln]
    assert calls and all("bf16" in ln for ln in calls), calls  # the bf16 kernel, not a cast to fp32


def test_bf16_off_switch_runs_fp32(monkeypatch):
    """GOPHER_JAX_ATTN_BF16=0 sends bf16 inputs through the fp32 kernel (for A/B measurements)."""
    monkeypatch.setenv("GOPHER_JAX_ATTN_BF16", "0")
    assert ca.kernel_dtype(jnp.bfloat16) == jnp.float32
    diff, seg, kw = _inputs(1, 20, 2, 1, 16)
    bf = [x.astype(jnp.bfloat16) for x in diff]
    hlo = jax.jit(_fn(ca.fused_causal_attention, seg, kw)).lower(*bf).as_text()
    calls = [ln for ln in hlo.splitlines() if ca._FWD_TARGET in ln and "custom_call" in ln]
    assert calls and not any("bf16" in ln.split("custom_call")[1] for ln in calls), calls


def test_bf16_without_bf16_dot_instructions(tmp_path):
    """The fallback micro-kernel (CPUs without AVX512-BF16: bf16 pairs widened to fp32) gives the
    same results: built here with -DGJ_NO_BF16_DOT, in a subprocess (one kernel library per process).
    On a host without AVX512-BF16 this is the path the in-process tests already ran; the flag still
    decides, so the build must report no bf16 dot there too."""
    import os
    import subprocess
    import sys

    code = ("import jax; jax.config.update('jax_platforms', 'cpu')\n"
            "from gopher_jax.kernels import cpu_attention as ca\n"
            "from tests.kernels.test_cpu_attention import _compare_bf16\n"
            "assert ca.available(), ca.unavailable_reason()\n"
            "assert not ca.has_bf16_dot()\n"
            "_compare_bf16('odd_t37_d40_rel_packed', seed=2)\n"
            "_compare_bf16('gqa_t37_alibi_packed', seed=2)\n")
    env = dict(os.environ, GOPHER_JAX_KERNEL_CXXFLAGS="-DGJ_NO_BF16_DOT", XLA_FLAGS="")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_bf16_model_runs_the_bf16_kernel(monkeypatch):
    """A bfloat16 model with attention_impl='auto' on one CPU device calls the bf16 kernel, forward
    and backward (lowered only: the kernel's numerics are the tests above); GOPHER_JAX_ATTN_BF16=0
    gives the fp32 kernel."""
    from gopher_jax.model.decoder import Decoder
    from tests.model.helpers import init_params, random_tokens, small_config

    cfg = small_config(dtype="bfloat16")
    params = init_params(cfg)
    tokens = random_tokens((2, 19))

    def calls(hlo, target):
        return [ln.split("custom_call")[1] for ln in hlo.splitlines() if target in ln and "custom_call" in ln]

    def loss(p):
        return jnp.mean(Decoder(cfg).apply({"params": p}, tokens).astype(jnp.float32))

    hlo = jax.jit(jax.grad(loss)).lower(params).as_text()
    for target in (ca._FWD_TARGET, ca._BWD_TARGET):
        assert calls(hlo, target) and all("bf16" in c for c in calls(hlo, target)), target
    monkeypatch.setenv("GOPHER_JAX_ATTN_BF16", "0")
    hlo = jax.jit(jax.grad(loss)).lower(params).as_text()
    assert calls(hlo, ca._FWD_TARGET) and not any("bf16" in c for c in calls(hlo, ca._FWD_TARGET))
