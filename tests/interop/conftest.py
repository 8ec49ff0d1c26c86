"""Interop tests load transformers (PyTorch) into a process that already runs jax and TensorFlow.

PyPI's torch wheel brings Triton (GPU kernels only), and importing Triton's LLVM-based extension
after jaxlib/TensorFlow's LLVM segfaults the process (seen with torch 2.14 / triton 3.8). torch only
probes Triton (`torch.utils._triton.has_triton_package` treats ImportError as "absent"), so we make
it unimportable here: on CPU nothing uses it.
"""
import sys

sys.modules.setdefault("triton", None)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def sp_model(tmp_path_factory):
    """A SentencePiece BPE model (our trainer, 1,000 pieces) trained on real text, shared by the interop tests."""
    from tests.interop import helpers
    return helpers.train_tokenizer(str(tmp_path_factory.mktemp("tokenizer")))


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, sp_model):
    """The small rope + swiglu model trained 4 steps on real text (vocab 1,000 padded to 1,024 rows)."""
    from tests.interop import helpers
    return helpers.write_run(str(tmp_path_factory.mktemp("run")), helpers.SMALL + helpers.ROPE_SWIGLU, sp_model)
