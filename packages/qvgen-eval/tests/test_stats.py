import math

import pytest

from qvgen.eval import mean_ci, paired_diff_ci, t975


def test_mean_ci_uses_student_t_and_shrinks_with_n():
    ci = mean_ci([1.0, 2.0, 3.0])
    assert ci.mean == 2.0 and ci.n == 3
    assert ci.ci95 == pytest.approx(4.303 * 1.0 / math.sqrt(3))
    wide, narrow = mean_ci([0.0, 1.0] * 4), mean_ci([0.0, 1.0] * 64)
    assert wide.ci95 is not None and narrow.ci95 is not None and narrow.ci95 < wide.ci95 / 3
    assert mean_ci([5.0]).ci95 is None and str(mean_ci([5.0])) == "5.000"
    with pytest.raises(ValueError, match="no values"):
        mean_ci([])


def test_t975_matches_the_table_and_tends_to_the_normal_quantile():
    assert t975(1) == 12.706 and t975(30) == 2.042
    assert t975(31) == pytest.approx(2.040, abs=2e-3) and t975(10_000) == pytest.approx(1.96, abs=1e-3)
    with pytest.raises(ValueError, match="df >= 1"):
        t975(0)


def test_paired_difference_removes_the_shared_per_item_offset():
    a = [0.1, 0.5, 0.9, 0.3]
    b = [x - 0.1 for x in a]
    d = paired_diff_ci(a, b)
    assert d.mean == pytest.approx(0.1) and d.ci95 == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="equal lengths"):
        paired_diff_ci([1.0], [1.0, 2.0])
