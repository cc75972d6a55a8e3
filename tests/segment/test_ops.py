import numpy as np
import pytest

from restyle.segment import ops


def _square(n=41, lo=15, hi=26):
    m = np.zeros((n, n), dtype=bool)
    m[lo:hi, lo:hi] = True
    return m


def test_grow_and_shrink_by_radius():
    m = _square()
    grown = ops.grow(m, 3)
    assert grown[15:26, 12].all() and not grown[20, 11]
    shrunk = ops.grow(m, -2)
    assert shrunk.sum() == 7 * 7 and not shrunk[16, 20]


def test_feather_ramps_outward_and_stops():
    m = _square()
    soft = ops.feather(m, 4)
    assert (soft[m] == 255).all()
    assert 0 < soft[20, 13] < 255  # 2 px outside
    assert soft[20, 10] == 0  # 5 px outside: beyond the ramp
    assert (soft[~ops.grow(m, 4)] == 0).all()


def test_fill_holes_and_remove_small():
    m = _square()
    m[19:22, 19:22] = False
    assert ops.fill_holes(m)[20, 20]
    m2 = _square()
    m2[2, 2] = True
    cleaned = ops.remove_small(m2, 5)
    assert not cleaned[2, 2] and cleaned[20, 20]


@pytest.mark.parametrize("activation", ["sigmoid", "ndtr"])
def test_activations_are_probabilities(activation):
    p = ops.activate(np.array([-10.0, 0.0, 10.0]), activation)
    assert p[0] < 0.01 and p[1] == pytest.approx(0.5) and p[2] > 0.99


def test_resize_map_keeps_requested_size():
    assert ops.resize_map(np.zeros((8, 8)), (30, 17)).shape == (17, 30)
