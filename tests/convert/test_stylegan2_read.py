"""`jaxgen.convert.stylegan2.read` on the official pickles of tests/reference/stylegan2 (written by the official
training-loop code path): it must give exactly the state dicts and init_kwargs the official code saw, which
tests/convert/test_stylegan2.py then converts. Needs torch (the `convert` extra), so it is skipped without it; this
module imports neither jax nor ml_collections, so it also runs in an environment with only torch, numpy and pytest:
  /work/torchenv/bin/python -m pytest tests/convert/test_stylegan2_read.py -p no:cacheprovider
"""
import json
import os
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from jaxgen.convert import ConversionError  # noqa: E402  (after the skip)
from jaxgen.convert import stylegan2  # noqa: E402

REF = os.path.join(os.path.dirname(os.path.dirname(__file__)), "reference", "stylegan2")


@pytest.mark.parametrize("name", ["uncond", "cond"])
def test_read_gives_the_official_state_dicts_and_init_kwargs(name):
  got = stylegan2.read(os.path.join(REF, f"{name}.pkl"))
  with open(os.path.join(REF, f"{name}.json")) as f:
    settings = json.load(f)
  arrays = np.load(os.path.join(REF, f"{name}.npz"))
  assert json.loads(json.dumps(got["training_set_kwargs"])) == settings["training_set_kwargs"]
  for key, cls in (("G", "Generator"), ("D", "Discriminator"), ("G_ema", "Generator")):
    assert got[key]["class_name"] == cls
    assert json.loads(json.dumps(got[key]["init_kwargs"])) == settings[key]
    want = {k.split("/", 1)[1]: arrays[k] for k in arrays.files if k.split("/")[0] == key}
    assert list(got[key]["state_dict"]) == list(want)  # same names, in state_dict order
    for k, v in want.items():
      assert got[key]["state_dict"][k].dtype == np.float32
      np.testing.assert_array_equal(got[key]["state_dict"][k], v, err_msg=f"{key}/{k}")


def test_read_never_runs_what_a_pickle_asks_for(tmp_path):
  """Only torch's tensor rebuilding, containers and the persistence stand-in are unpickled: a pickle that calls
  os.system is refused before anything runs."""
  marker = tmp_path / "ran"
  path = tmp_path / "evil.pkl"
  path.write_bytes(b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
  with pytest.raises(ConversionError, match="os.system"):
    stylegan2.read(str(path))
  calls = (("builtins", "exec"), ("builtins", "getattr"), ("torch", "load"), ("torch.serialization", "load"))
  for module, name in calls:
    path.write_bytes(f"c{module}\n{name}\n(S'open({str(marker)!r}, \"w\")'\ntR.".encode())
    with pytest.raises(ConversionError, match=f"{module}.{name}"):
      stylegan2.read(str(path))
  # A storage blob is read with weights_only: one that pickles a call is refused by torch, not run.
  blob = pickle.dumps(RunsWhenLoaded(str(marker)), protocol=2)
  path.write_bytes(b"ctorch.storage\n_load_from_bytes\n(" + pickle.dumps(blob, protocol=3)[2:-1] + b"tR.")
  with pytest.raises(Exception):
    stylegan2.read(str(path))
  assert not marker.exists()


class RunsWhenLoaded:
  def __init__(self, path):
    self.path = path

  def __reduce__(self):
    return (open, (self.path, "w"))


def test_read_errors_name_the_fix(tmp_path):
  truncated = tmp_path / "truncated.pkl"
  truncated.write_bytes(open(os.path.join(REF, "uncond.pkl"), "rb").read()[:5000])
  with pytest.raises(ConversionError, match="download it again"):
    stylegan2.read(str(truncated))
  tf_era = tmp_path / "tf.pkl"
  tf_era.write_bytes(b"\x80\x02cdnnlib.tflib.network\nNetwork\n)\x81.")
  with pytest.raises(ConversionError, match="legacy.py"):
    stylegan2.read(str(tf_era))
  nvae = tmp_path / "nvae.pt"
  torch.save({"state_dict": {}, "args": None}, nvae)
  with pytest.raises(ConversionError, match="--family=nvae"):
    stylegan2.read(str(nvae))
  with pytest.raises(ConversionError, match="No file"):
    stylegan2.read(str(tmp_path / "missing.pkl"))
