"""train/python_gc.py: garbage cycles alive before the freeze are collected; survivors leave the collector.
(That the training loop calls it once, after its first step: tests/interop/test_import.py.)"""
import gc
import weakref

from gopher_jax.train import python_gc


class _Node:
    pass


def test_freeze_collects_cycles_then_moves_survivors_out_of_the_collector():
    gc.unfreeze()
    try:
        garbage = _Node()
        garbage.self = garbage  # a reference cycle only the collector can free
        dead = weakref.ref(garbage)
        del garbage
        kept = _Node()
        assert any(o is kept for o in gc.get_objects())
        frozen = python_gc.freeze_long_lived()
        assert dead() is None  # collected before freezing, not frozen forever
        assert frozen == gc.get_freeze_count() > 0
        assert not any(o is kept for o in gc.get_objects())  # in the permanent generation now
        later = _Node()
        assert any(o is later for o in gc.get_objects())  # objects made afterwards are still collected
    finally:
        gc.unfreeze()

