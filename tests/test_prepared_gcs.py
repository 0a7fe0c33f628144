"""Prepared datasets on an object store (`gcs`: the in-memory gs:// of tests/conftest.py): prepare_data uploads with
info.json last, training copies the shards it reads to config.data_cache_dir, checked against info.json, and
re-uses them; a truncated or corrupt shard, or a full local disk, is a one-line error. A TFDS data_dir on the store
is staged the same way (the split's shards and the metadata)."""
import json
import pathlib

from etils import epath
import numpy as np
import PIL.Image
import pytest

from experiments.configs import glow_quickstart
from jaxgen import data
from jaxgen import prepared
from jaxgen.training import trainer

DEST = "gs://bucket/digits"


@pytest.fixture(scope="module")
def images(tmp_path_factory):
  root = tmp_path_factory.mktemp("digits")
  for i in range(24):
    PIL.Image.fromarray(np.random.default_rng(i).integers(0, 256, (28, 28), dtype=np.uint8)).save(root / f"{i:02d}.png")
  return root


def _shards(remote):
  return sorted(f.name for f in remote.iterdir() if f.name != prepared.INFO)


def test_prepare_to_gcs_then_train_from_it_with_staged_shards(gcs, images, tmp_path_factory):
  info = prepared.prepare(images, DEST, holdout=0.25)
  remote = gcs.parent / "digits"
  assert json.loads((remote / prepared.INFO).read_text()) == json.loads(json.dumps(info))
  assert _shards(remote) == ["test-00000.array_record", "train-00000.array_record"]
  shard = info["splits"]["train"]["shards"][0]
  assert ((remote / shard["file"]).stat().length, shard["sha256"]) == prepared.file_digest(remote / shard["file"])
  with pytest.raises(ValueError, match="already holds a prepared dataset; pass --overwrite"):
    prepared.prepare(images, DEST)

  cache, run = tmp_path_factory.mktemp("cache"), tmp_path_factory.mktemp("run")
  config = glow_quickstart.get_config("smoke")  # as test_prepare_data's folder run: its compiled programs are cached
  config.dataset, config.data_cache_dir, config.total_steps = f"folder:{DEST}", str(cache), 2
  state = trainer.train_and_evaluate(config, str(run))
  assert int(state["step"]) == 2
  staged = {p.name for p in cache.glob("*/*.array_record")}
  assert staged == {"train-00000.array_record", "test-00000.array_record"}

  local = next(cache.glob("*/train-00000.array_record"))
  local.write_bytes(b"stale")  # a shard that no longer matches its marker is copied again
  mtime = next(cache.glob("*/test-00000.array_record")).stat().st_mtime_ns
  dataset = data.load(config.dataset, "train", cache_dir=str(cache))
  assert dataset.num_examples == 18 and dataset.get(np.arange(18))["image"].shape == (18, 28, 28, 1)
  data.load(config.dataset, "test", cache_dir=str(cache))
  assert next(cache.glob("*/test-00000.array_record")).stat().st_mtime_ns == mtime  # verified before: re-used


def test_corrupt_remote_shards_and_a_full_disk_are_one_line_errors(gcs, images, tmp_path_factory, monkeypatch):
  sha256 = prepared.prepare(images, DEST)["splits"]["train"]["shards"][0]["sha256"]
  shard = gcs.parent / "digits" / "train-00000.array_record"
  good = shard.read_bytes()
  cache = tmp_path_factory.mktemp("cache")
  for bad in (good[:-10], good[:-1] + bytes([good[-1] ^ 1])):  # truncated; same size, one bit flipped
    shard.write_bytes(bad)
    with pytest.raises(ValueError, match=f"{shard} is {len(bad)} bytes .* lists {len(good)} bytes, sha256 "
                                         f"{sha256[:12]}.*truncated or corrupt.*--overwrite") as e:
      data.load(f"folder:{DEST}", "train", cache_dir=str(cache))
    assert "\n" not in str(e.value)
  assert not list(cache.glob("*/*.partial")) and not list(cache.glob("*/*.array_record"))

  shard.write_bytes(good)
  monkeypatch.setattr(prepared.shutil, "disk_usage", lambda _: type("Usage", (), {"free": 10}))
  with pytest.raises(OSError, match="needs .* GiB in .*, which has .* GiB free; set --config.data_cache_dir"):
    data.load(f"folder:{DEST}", "train", cache_dir=str(cache))


def test_an_interrupted_upload_never_looks_complete_and_is_replaced(gcs, images, monkeypatch):
  prepared.prepare(images, DEST, holdout=0.25)
  remote = gcs.parent / "digits"
  copy = prepared.file_digest

  def fail_on_the_second_shard(path, copy_to=None):
    if copy_to is not None and copy_to.name.startswith("train"):
      raise KeyboardInterrupt
    return copy(path, copy_to)

  monkeypatch.setattr(prepared, "file_digest", fail_on_the_second_shard)
  with pytest.raises(KeyboardInterrupt):
    prepared.prepare(images, DEST, holdout=0.25, overwrite=True)
  assert not (remote / prepared.INFO).exists() and _shards(remote) == ["test-00000.array_record"]
  with pytest.raises(FileNotFoundError, match="no info.json"):
    data.load(f"folder:{DEST}", "train")
  monkeypatch.setattr(prepared, "file_digest", copy)
  prepared.prepare(images, DEST, holdout=0.25)  # the leftover shards of the interrupted upload are replaced
  assert (remote / prepared.INFO).exists() and len(_shards(remote)) == 2


# TFDS mnist 3.0.1 cut to 6 + 2 examples (tests/reference/tfds_mini/make_fixture.py)
MINI_TFDS = pathlib.Path(__file__).parent / "reference" / "tfds_mini"


def test_a_tfds_data_dir_on_the_store_is_staged_split_by_split(gcs, tmp_path_factory, monkeypatch):
  remote_dir = epath.Path("gs://bucket/tfds")
  for f in MINI_TFDS.rglob("*"):
    if f.is_file() and f.suffix != ".py":
      (remote_dir / f.relative_to(MINI_TFDS)).parent.mkdir(parents=True, exist_ok=True)
      (remote_dir / f.relative_to(MINI_TFDS)).write_bytes(f.read_bytes())
  name, cache = "mnist", tmp_path_factory.mktemp("cache")
  want = data.load(name, "train", data_dir=str(MINI_TFDS))

  got = data.load(name, "train", data_dir=str(remote_dir), cache_dir=str(cache))
  assert (got.num_examples, got.image_shape, got.num_classes) == (6, (28, 28, 1), 10)
  np.testing.assert_array_equal(got.get(np.arange(6))["image"], want.get(np.arange(6))["image"])
  np.testing.assert_array_equal(got.get(np.arange(6))["label"], [4, 1, 0, 7, 8, 1])
  staged = sorted(f.name for f in cache.rglob("*.array_record*") if not f.name.endswith(".verified"))
  assert staged == ["mnist-train.array_record-00000-of-00001"]  # only the split it opened
  assert not list(cache.rglob("*.partial"))

  copied, real_digest = [], prepared.file_digest
  monkeypatch.setattr(prepared, "file_digest", lambda path, copy_to=None: copied.append(path.name)
                      or real_digest(path, copy_to))
  assert data.load(name, "train", data_dir=str(remote_dir), cache_dir=str(cache)).num_examples == 6
  assert copied == []  # re-used
  assert data.load(name, "test", data_dir=str(remote_dir), cache_dir=str(cache)).num_examples == 2
  assert copied == ["mnist-test.array_record-00000-of-00001"]

  with pytest.raises(FileNotFoundError, match=r"No prepared TFDS dataset mnist 3\.0\.1 in "
                                              r"gs://bucket/elsewhere .*download_and_prepare") as e:
    data.load(name, "train", data_dir="gs://bucket/elsewhere", cache_dir=str(cache))
  assert "\n" not in str(e.value)
