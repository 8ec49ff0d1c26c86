"""Commands use the CPU backend on hosts without an accelerator, so libtpu (installed by the [tpu]
and [test] extras) never prints its initialisation errors there; a JAX_PLATFORMS the user set wins."""
import os
import subprocess
import sys

from gopher_jax.platforms import default_to_cpu, tpu_attached

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_cpu_only_without_an_accelerator(tmp_path):
    dev = tmp_path / "dev"
    dev.mkdir()
    env = {}
    assert default_to_cpu(env, str(dev)) == "cpu" and env["JAX_PLATFORMS"] == "cpu"
    # The user's choice is kept, even an empty one (jax then picks).
    for given in ("", "cpu,tpu", "tpu"):
        env = {"JAX_PLATFORMS": given}
        assert default_to_cpu(env, str(dev)) == given
    # A TPU VM's device files or runtime environment: jax is left to find the TPU.
    (dev / "vfio").mkdir()
    (dev / "vfio" / "vfio").touch()  # the VFIO container alone is not a TPU
    assert not tpu_attached({}, str(dev))
    (dev / "vfio" / "0").touch()
    assert tpu_attached({}, str(dev)) and default_to_cpu({}, str(dev)) is None
    assert default_to_cpu({"TPU_ACCELERATOR_TYPE": "v4-8"}, str(tmp_path)) is None
    (tmp_path / "accel0").touch()
    assert tpu_attached({}, str(tmp_path))
    gpu = tmp_path / "gpu"
    gpu.mkdir()
    (gpu / "nvidia0").touch()
    assert default_to_cpu({}, str(gpu)) is None


def test_a_command_prints_no_tpu_initialisation_noise():
    import libtpu  # noqa: F401  (installed by the test extra: the noise this test guards against)

    env = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", "XLA_FLAGS", "TF_CPP_MIN_LOG_LEVEL")}
    proc = subprocess.run([sys.executable, "-m", "gopher_jax.cli", "params", "--gin_file=gin_configs/models/tiny.gin"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "embedder/embedding" in proc.stdout
    noisy = [line for line in proc.stderr.splitlines()
             if any(w in line for w in ("libtpu", "TPU", "tpu_", "InitGoogle", "common_lib.cc"))]
    assert not noisy, noisy
    # Set by the user, JAX_PLATFORMS is left as it is.
    proc = subprocess.run([sys.executable, "-c", "from gopher_jax.platforms import default_to_cpu; "
                           "import os; print(default_to_cpu(), os.environ['JAX_PLATFORMS'])"],
                          cwd=REPO, env={**env, "JAX_PLATFORMS": "cpu,tpu"}, capture_output=True, text=True)
    assert proc.stdout.split() == ["cpu,tpu", "cpu,tpu"]
