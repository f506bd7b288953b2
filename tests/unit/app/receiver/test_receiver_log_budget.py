"""The budget the receiver's refusal warnings keep to: a burst, then one a period, and a count of the
lines left out in the next line written."""

import pytest

from app.receiver.desk import LogBudget

pytestmark = pytest.mark.unit


def test_a_kind_logs_a_burst_then_one_line_a_period_each_saying_how_many_were_left_out() -> None:
    now = [0.0]
    budget = LogBudget(burst=3, every_s=1.0, clock=lambda: now[0])

    first = [budget.take("unreadable") for _ in range(10)]
    now[0] = 1.0
    after_a_period = [budget.take("unreadable") for _ in range(2)]

    assert first == [0, 0, 0, None, None, None, None, None, None, None]
    assert after_a_period == [7, None]
    assert budget.take("bad_crc") == 0  # another kind has its own budget


def test_a_quiet_kind_gets_its_whole_burst_back_and_no_more() -> None:
    now = [0.0]
    budget = LogBudget(burst=2, every_s=1.0, clock=lambda: now[0])
    assert [budget.take("timestamp") for _ in range(3)] == [0, 0, None]

    now[0] = 3600.0

    assert [budget.take("timestamp") for _ in range(3)] == [1, 0, None]
