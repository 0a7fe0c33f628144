"""Completion regions (jaxgen.metrics.completion); the completion likelihood itself is tested with LMConv, in
tests/autoregressive/test_lmconv_completion.py and through `experiments.evaluate --evals=completion`."""
import pytest

from jaxgen.metrics import completion


def test_missing_regions():
  hidden_top = completion.missing_region("top", 4, 4)  # rows 0-1 hidden, rows 2-3 observed
  assert hidden_top[:2].all() and not hidden_top[2:].any()
  bottom, left = completion.missing_region("bottom", 32, 32), completion.missing_region("left", 5, 4)
  assert bottom.sum() == 512 and bottom[31].all()
  assert left[:, :2].all() and left.sum() == 10
  center = completion.missing_region("center", 8, 8)
  assert center.sum() == 16 and center[2:6, 2:6].all()
  with pytest.raises(ValueError, match="Unknown completion region"):
    completion.missing_region("middle", 4, 4)
