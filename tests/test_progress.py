"""jxhash.training.progress: sparse newline-terminated lines when the stream is not a terminal, tqdm on one."""

from __future__ import annotations

import io

import pytest

from jxhash.training import progress


class Clock:
  def __init__(self, step: float):
    self.t, self.step = 0.0, step

  def __call__(self) -> float:
    self.t += self.step
    return self.t


def _run(total, *, seconds_per_epoch, initial=0):
  stream = io.StringIO()
  bar = progress.LineProgress(total, initial, "dcmh", stream, clock=Clock(seconds_per_epoch))
  for epoch in range(initial, total):
    bar.set_postfix({"image/loss": f"{1 / (epoch + 1):.4g}"}, refresh=False)
    bar.update(1)
  bar.close()
  return stream.getvalue()


@pytest.mark.parametrize("seconds", [0.01, 40.0])
def test_a_long_run_writes_about_twenty_lines(seconds):
  text = _run(500, seconds_per_epoch=seconds)
  lines = text.splitlines()
  assert "\r" not in text and text.endswith("\n")
  assert len(lines) <= 20 if seconds < 1 else 20 <= len(lines) <= 21
  assert lines[-1].startswith("dcmh: epoch 500/500 (100%), ") and lines[-1].endswith("image/loss=0.002")


def test_fast_runs_write_only_the_last_epoch_and_slow_short_runs_every_epoch():
  assert _run(500, seconds_per_epoch=0.01).splitlines() == [_run(500, seconds_per_epoch=0.01).splitlines()[-1]]
  assert len(_run(5, seconds_per_epoch=60).splitlines()) == 5


def test_resumed_run_counts_from_its_start():
  # a line every 5 epochs (a twentieth of the run), the first 5 epochs after the resumed start
  lines = _run(100, seconds_per_epoch=60, initial=90).splitlines()
  assert [line.split(",")[0] for line in lines] == ["dcmh: epoch 95/100 (95%)", "dcmh: epoch 100/100 (100%)"]
  assert " 60 s/epoch" in lines[0]


def test_factory_picks_lines_for_a_file_and_tqdm_for_a_terminal():
  stream = io.StringIO()
  bar = progress.bar(3, 0, "m", True, file=stream)
  assert isinstance(bar, progress.LineProgress)
  for _ in range(3):
    bar.update(1)
  bar.close()
  assert stream.getvalue().count("\n") == 1 and stream.getvalue().startswith("m: epoch 3/3 (100%)")

  class Terminal(io.StringIO):
    def isatty(self):
      return True

  terminal = Terminal()
  bar = progress.bar(3, 0, "m", True, file=terminal)
  assert not isinstance(bar, progress.LineProgress)
  for _ in range(3):
    bar.update(1)
  bar.close()
  assert "\r" in terminal.getvalue() and "3/3" in terminal.getvalue()
  quiet = io.StringIO()
  progress.bar(3, 0, "m", False, file=quiet).close()
  assert quiet.getvalue() == ""


@pytest.mark.slow
def test_training_into_a_log_file_writes_few_lines(tmp_path, capfd):
  from jxhash import data
  from jxhash.training import trainer
  from jxhash.methods import get_method
  ds = data.load("synthetic", num_items=300, num_query=50, num_train=120, num_val=30)
  spec = get_method("dcmh")
  config = spec.Config(bits=8, epochs=25, batch_size=60, image_hidden=(16,), text_hidden=(16,))
  trainer.fit(spec, config, ds, trainer.TrainOptions(eval_every=0))
  err = capfd.readouterr().err
  lines = [line for line in err.splitlines() if line.startswith("dcmh: epoch")]
  assert "\r" not in err and 1 <= len(lines) <= 21 and lines[-1].startswith("dcmh: epoch 25/25 (100%)")
