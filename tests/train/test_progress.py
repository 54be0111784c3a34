"""The training progress bar: a live bar on a terminal, periodic plain lines anywhere else."""

from __future__ import annotations

import io

from rich.console import Console

from peftlab.train.runtime import ProgressBar


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _run(console: Console, steps: int = 100, seconds_per_step: float = 1.0) -> str:
    clock = FakeClock()
    with ProgressBar(steps, True, interval=10.0, console=console, clock=clock) as bar:
        for step in range(1, steps + 1):
            clock.now += seconds_per_step
            bar.advance()
            if step % 5 == 0:
                bar.show(loss=f"{1 / step:.4f}", rate="1.00 step/s")
            if step == 50:
                bar.show(description="evaluate")
                bar.show(description="train")
        bar.show(description="done")
    return console.file.getvalue()


def test_piped_output_gets_a_plain_line_every_interval():
    lines = _run(Console(file=io.StringIO(), force_terminal=False)).splitlines()
    assert "\x1b" not in "".join(lines) and "━" not in "".join(lines)  # no bar, no cursor control
    train = [line for line in lines if line.startswith("train step")]
    assert 9 <= len(train) <= 12  # 100 s at one line per 10 s, plus the one after the evaluation
    assert train[0] == "train step 10/100 (10%) loss 0.2000 1.00 step/s ETA 90 s elapsed 10 s"  # the last loss shown
    assert any(line.startswith("evaluate step 50/100") for line in lines)
    assert lines[-1].startswith("done step 100/100 (100%)")


def test_fast_steps_do_not_flood_the_log():
    lines = _run(Console(file=io.StringIO(), force_terminal=False), steps=1000, seconds_per_step=0.01).splitlines()
    assert len(lines) <= 6  # 10 s of work: one periodic line, the phases, the last line


def test_terminal_gets_the_live_bar_and_no_lines():
    output = _run(Console(file=io.StringIO(), force_terminal=True, width=120))
    assert "train step" not in output and "━" in output


def test_disabled_prints_nothing():
    console = Console(file=io.StringIO(), force_terminal=False)
    with ProgressBar(10, False, console=console) as bar:
        bar.advance()
        bar.show(loss="1.0")
    assert console.file.getvalue() == ""
