"""Progress: rates measured over the step, plain lines at a bounded rate when output is not a terminal."""

from harness.core.progress import Meter, _plain_lines


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rate_and_eta_over_the_whole_step_for_slow_uneven_steps():
    clock = FakeClock()
    meter = Meter("train", None, "step", clock=clock)
    clock.now += 30  # trainer setup before the total is known does not count
    meter.advance(0, total=20)
    for seconds in (9.0, 5.0, 7.0, 7.0):  # 28 s for 4 steps: 0.14 step/s
        clock.now += seconds
        meter.advance(1)
    assert round(meter.rate, 3) == round(4 / 28, 3)
    assert round(meter.eta) == round(16 / (4 / 28))
    assert "0.14 step/s (7.0 s/step)" in meter.line()


def test_one_big_batch_late_in_a_step_is_not_read_as_a_burst():
    clock = FakeClock()
    meter = Meter("predict", 16, "ex", clock=clock)
    clock.now += 58.9
    meter.advance(8)
    clock.now += 0.1  # the second batch's rows arrive right after the first's
    meter.advance(8)
    assert round(meter.rate, 3) == round(16 / 59, 3)  # not 80 ex/s from the last two updates


def test_plain_lines_are_bounded_in_rate_and_end_with_the_final_figures():
    clock = FakeClock()
    meter = Meter("train", 100, "step", clock=clock)
    lines: list[str] = []
    with _plain_lines(meter, every_s=10, write=lines.append) as advance:
        for step in range(100):
            clock.now += 1.0
            advance(1, loss=f"{5 - step / 50:.2f}")
    # One at the first step, one every 10 s of the 100 s, and the final figures.
    assert len(lines) == 11
    assert lines[0].startswith("[progress] train: step 1/100 (1%) | loss=5.00 | 1.00 step/s")
    assert "ETA 0:01:39" in lines[0]
    assert lines[-1].startswith("[progress] train: step 100/100 (100%) | loss=3.02") and "ETA 0:00:00" in lines[-1]


def test_progress_in_a_file_is_plain_text(tmp_path):
    import subprocess
    import sys

    from conftest import REPO

    code = ("from harness.core.progress import progress_bar\n"
            "with progress_bar('predict', total=3, unit='ex') as advance:\n"
            "    for _ in range(3): advance(1)\n")
    log = tmp_path / "out.log"
    with log.open("w") as handle:
        subprocess.run([sys.executable, "-c", code], cwd=REPO, stdout=handle, stderr=handle, check=True, timeout=60)
    text = log.read_text()
    assert "[progress] predict: ex 1/3 (33%)" in text and "[progress] predict: ex 3/3 (100%)" in text
    assert "\x1b[" not in text  # no terminal escape codes in a log file
