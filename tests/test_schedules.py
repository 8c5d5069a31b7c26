import numpy as np
import pytest

from torchlangevin.schedules import Constant, Cosine, Exponential, Geometric, Linear, Warmup


def test_endpoints_and_shapes():
    assert Linear(1.0, 0.0, 11)(0) == 1.0 and Linear(1.0, 0.0, 11)(10) == 0.0
    assert Linear(1.0, 0.0, 11)(5) == pytest.approx(0.5)
    assert Linear(1.0, 0.0, 11)(100) == 0.0  # held at the end
    assert Cosine(1.0, 0.1, 101)(0) == pytest.approx(1.0)
    assert Cosine(1.0, 0.1, 101)(50) == pytest.approx(0.55)
    assert Cosine(1.0, 0.1, 101)(100) == pytest.approx(0.1)
    g = Geometric(1e-2, 1e-4, 101)
    assert g(0) == pytest.approx(1e-2) and g(50) == pytest.approx(1e-3)
    assert g(100) == pytest.approx(1e-4)
    assert Exponential(1.0, 0.5, min_value=0.2)(1) == 0.5
    assert Exponential(1.0, 0.5, min_value=0.2)(5) == 0.2
    assert Constant(0.3)(7) == 0.3


@pytest.mark.parametrize("s", [Constant(0.3), Linear(1, 2, 50), Cosine(2, 1, 50),
                               Geometric(1, 0.01, 50), Exponential(1, 0.9),
                               Warmup(Linear(0.1, 0.01, 40), 10, 0.1)])
def test_array_evaluation_equals_scalar(s):
    steps = np.arange(60)
    table = s.table(60)
    assert table.shape == (60,)
    np.testing.assert_allclose(table, [s(int(t)) for t in steps])


def test_warmup_ramps_then_follows_main():
    w = Warmup(Constant(1.0), warmup_steps=10, init_factor=0.1)
    assert w(0) == pytest.approx(0.1)
    assert w(5) == pytest.approx(0.55)
    assert w(10) == 1.0 and w(50) == 1.0


def test_schedule_errors():
    with pytest.raises(ValueError, match="start must be a positive finite number"):
        Geometric(0.0, 1.0, 10)
    with pytest.raises(ValueError, match="n_steps must be an integer >= 1; got 0"):
        Linear(1.0, 0.0, 0)
    with pytest.raises(ValueError, match="decay_rate must be in"):
        Exponential(1.0, 1.5)
    with pytest.raises(TypeError, match="value must be a number"):
        Constant("a")
