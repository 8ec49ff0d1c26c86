"""The O(1) index permutation is a bijection, differs by key, and is reproducible."""
import numpy as np
import pytest

from gopher_jax.data.index_shuffle import epoch_key, permute


@pytest.mark.parametrize("n", [1, 2, 3, 10, 257, 1000, 4097])
def test_is_a_permutation(n):
    p = permute(np.arange(n), n, epoch_key(3, 1, 0))
    assert sorted(p.tolist()) == list(range(n))


def test_keys_give_different_orders_and_elementwise_equals_vectorised():
    n = 1000
    a, b = permute(np.arange(n), n, epoch_key(0, 0, 0)), permute(np.arange(n), n, epoch_key(0, 0, 1))
    assert (a != b).mean() > 0.9
    assert [int(permute(i, n, epoch_key(0, 0, 0))) for i in range(0, n, 97)] == a[::97].tolist()
    # Looks shuffled: far from the identity and from a rotation.
    assert abs(np.corrcoef(np.arange(n), a)[0, 1]) < 0.1


def test_rejects_out_of_range():
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        permute([5], 5, 1)
