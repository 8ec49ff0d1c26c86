"""AMX in the CPU kernels (kernels/amx.h): used exactly where the host has it, and switching it off
(GOPHER_JAX_AMX=0) runs the AVX512-BF16 / widened paths with the same results.

On a host with AMX-BF16 the in-process kernel tests (test_cpu_gemm.py, test_cpu_attention.py) run
the AMX tiles; the subprocess here runs the same comparisons with AMX off, so both bf16 paths are
checked on every host kind. The switch is read once per process, hence the subprocess.
"""
import os
import platform
import subprocess
import sys

from gopher_jax.kernels import build, cpu_attention, cpu_gemm

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _host_has_amx() -> bool:
    """AMX-BF16 in the CPU flags and a Linux that grants tile state (>= 5.16), AMX not switched off."""
    flags = build.host_description()["cpu_flags"]
    release = tuple(int(x) for x in platform.release().split(".")[:2] if x.isdigit())
    return ({"amx_tile", "amx_bf16"} <= set(flags) and platform.system() == "Linux" and release >= (5, 16)
            and os.environ.get("GOPHER_JAX_AMX", "") != "0")


def test_amx_is_used_exactly_where_the_host_has_it():
    assert cpu_gemm.available(), cpu_gemm.unavailable_reason()
    assert cpu_attention.available(), cpu_attention.unavailable_reason()
    amx = _host_has_amx()
    assert cpu_gemm.uses_amx() == amx and cpu_attention.uses_amx() == amx
    flags = build.host_description()["cpu_flags"]
    expected = "amx_bf16" if amx else ("avx512_bf16" if "avx512_bf16" in flags else "fp32_widened")
    assert cpu_gemm.bf16_unit() == expected


def test_amx_off_gives_the_same_gemm_and_attention_results():
    code = ("import jax; jax.config.update('jax_platforms', 'cpu')\n"
            "from gopher_jax.kernels import cpu_attention as ca, cpu_gemm\n"
            "from tests.kernels import test_cpu_gemm as g, test_cpu_attention as a\n"
            "assert not cpu_gemm.uses_amx() and not ca.uses_amx()\n"
            "assert cpu_gemm.bf16_unit() != 'amx_bf16'\n"
            "for m, k, n in g.SHAPES:\n"
            "    for ta in (False, True):\n"
            "        for tb in (False, True):\n"
            "            g.test_gemm_matches_xla('cpu_gemm', m, k, n, ta, tb, 'bfloat16')\n"
            "for case in ('gqa_rel_packed', 'odd_t37_d40_rel_packed'):\n"
            "    a._compare_bf16(case, seed=3)\n"
            "print('ok')\n")
    env = dict(os.environ, GOPHER_JAX_AMX="0", XLA_FLAGS="")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]
