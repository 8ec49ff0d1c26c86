"""Keeps Python's cyclic garbage collector out of the training steps.

After set-up the process holds millions of long-lived Python objects (jax, flax, seqio and
TensorFlow modules, gin bindings, the traced and compiled step). The collector's periodic full
collections walk all of them, from the thread that dispatches the steps: on the gopher_44m bf16
CPU step (2-core Xeon with AMX, benchmarks/README.md "Python's collector and the step") such a
collection turned one step in five from ~2.1 s into ~4 s. `freeze_long_lived()` collects once and
moves every object alive at that point into the permanent generation (`gc.freeze`, Python 3.7+), so
later collections see only the objects the training loop itself creates. Reference counting still
frees everything as usual; only reference cycles created before the call are never collected, and the
call collects those first. Megatron-LM's `--manual-gc` addresses the same stalls by disabling the
collector; freezing keeps it on for the loop's own cycles.
"""
from __future__ import annotations

import gc


def freeze_long_lived() -> int:
    """Collects garbage once, then freezes every surviving object (gc.freeze); returns how many
    objects are now frozen. Calling it again freezes only the objects made since."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
