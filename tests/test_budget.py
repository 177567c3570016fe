"""The budget arithmetic the Trainer and the studio share (training/budget.py)."""

import pytest

from artforge.config import TrainConfig
from artforge.studio import gallery
from artforge.training.budget import Budget, Speed, clock, out_of_time, recent_rate


class FakeClock:
    """Seconds set by the test: a pause is a jump of the clock."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_spent_is_the_budget_that_ends_first():
    b = Budget(steps=100, epochs=2.0, minutes=10.0)
    assert b.spent(25, 60.0, epoch=0.5) == 0.25  # steps ahead of minutes (0.1) and epochs
    assert b.spent(25, 300.0, epoch=0.5) == 0.5  # the clock
    assert b.spent(25, 60.0, epoch=1.5) == 0.75  # the epochs
    assert b.spent(500, 0.0) == 1.0  # capped
    assert Budget().spent(5, 5.0) is None


def test_total_steps_takes_the_first_of_steps_and_epochs():
    # 3 epochs of 10 images in batches of 3: ceil(30 / 3) = 10, not ceil(3 * 3.333...) = 11
    assert Budget(epochs=3).total_steps(10, 3) == 10
    assert Budget(steps=7, epochs=3).total_steps(10, 3) == 7
    assert Budget(minutes=1).total_steps(10, 3) is None


def test_budget_of_a_train_config_and_of_config_json():
    assert Budget.of(TrainConfig(steps=5)) == Budget(steps=5)
    # hand-edited config.json: values that are no positive numbers are no budget
    assert Budget.of({"steps": "x", "minutes": 0, "epochs": 2}) == Budget(epochs=2)


def test_time_left_takes_the_recent_speed():
    b = Budget(steps=1000)
    assert b.time_left(500, 10.0, steps_per_s=50.0) == 10.0
    assert b.time_left(500, 10.0, steps_per_s=None) is None
    # a minutes budget runs on its own clock, whatever the speed
    assert Budget(steps=1000, minutes=1).time_left(500, 55.0, steps_per_s=1.0) == 5.0


def test_a_pause_does_not_blow_up_the_time_left():
    """10 steps of 8 images per second, logged every 10 steps; then the process is stopped
    for an hour (Ctrl-Z) inside one window. The average since the start would say 3.5 hours
    are left; the recent speed still says about 20 minutes."""
    t = FakeClock()
    speed = Speed(clock=t)
    budget = Budget(steps=14_000)
    step = 0
    for window in range(8):
        for _ in range(10):
            t.now += 0.1
            speed.add(8)
            step += 1
        if window == 5:
            t.now += 3600.0  # the pause
        speed.lap()
    assert speed.recent[-3] == pytest.approx(80 / 3601, rel=1e-6)  # the window that held the pause
    rate = speed.images_per_s()
    assert rate == pytest.approx(80.0)
    left = budget.time_left(step, t.now, rate / 8)
    assert left == pytest.approx((14_000 - 80) / 10)
    average = (14_000 - step) * t.now / step  # what the bar said before
    assert average > 10 * left


def test_recent_rate_is_the_median_of_the_last_windows():
    assert recent_rate([]) is None
    assert recent_rate([10, 10, 0.01, 10, 10]) == 10
    assert recent_rate([1, 1, 1, 1, 1, 50, 50, 50], n=5) == 50  # a real speed-up is followed
    assert recent_rate([0.0, -1.0]) is None


def test_out_of_time_keeps_room_for_the_finish():
    assert not out_of_time(None, 1e9, 0.0)
    assert not out_of_time(1.0, 50.0, 9.0) and out_of_time(1.0, 50.0, 10.0)


def test_clock():
    assert [clock(9), clock(247), clock(3909)] == ["0:09", "4:07", "1:05:09"]


def test_the_studio_reads_the_same_arithmetic():
    cfg = {"train": {"steps": 1000, "batch_size": 8}}
    rows = [{"step": 10 * k, "elapsed": float(k), "epoch": 0.1 * k, "img_per_s": 80.0} for k in range(1, 6)]
    rows[2]["img_per_s"] = 0.02  # a window with a pause in it
    rows[-1]["elapsed"] = 3605.0
    assert gallery.progress(cfg, rows[-1]) == Budget(steps=1000).spent(50, 3605.0) == 0.05
    assert gallery.time_left(cfg, rows) == pytest.approx(95.0)  # 950 steps at 10 steps/s
    # a row without a speed: the average since the start
    assert gallery.time_left({"train": {"steps": 100}}, [{"step": 50, "elapsed": 10.0}]) == 10.0
    assert gallery.time_left(cfg, []) is None
    assert gallery.progress({"train": {"epochs": 2}}, {"step": 3, "epoch": 0.5}) == 0.25
