"""experiments.prepare_data and the `folder:DIR` dataset: decoding, labels, splits, resize, errors, atomic writes,
the CLI, and a 2-step training run on a prepared folder."""
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import PIL.Image
import PIL.ImageOps
import pytest

from experiments.configs import glow_quickstart
from jaxgen import data
from jaxgen import prepared
from jaxgen.training import trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
H, W = 40, 50  # non-square on purpose: the crop and the shape order (H, W) both matter


def _random(shape, seed):
  return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
  """cats/ and dogs/ with PNG, JPEG (one EXIF-rotated), lossless WebP, grayscale, RGBA, a corrupt PNG, a text file."""
  root = tmp_path_factory.mktemp("images")
  (root / "cats").mkdir()
  (root / "dogs").mkdir()
  PIL.Image.fromarray(_random((H, W, 3), 0)).save(root / "cats/a.png")
  PIL.Image.fromarray(_random((H, W, 3), 1)).save(root / "cats/b.jpg", quality=90)
  exif = PIL.Image.Exif()
  exif[0x0112] = 6  # stored 50 high x 40 wide, displayed rotated by 90 degrees: 40 x 50
  PIL.Image.fromarray(_random((W, H, 3), 2)).save(root / "cats/rotated.jpg", exif=exif)
  PIL.Image.fromarray(_random((H, W, 3), 3)).save(root / "dogs/c.webp", lossless=True)
  PIL.Image.fromarray(_random((H, W), 4)).save(root / "dogs/d.png")  # grayscale
  rgba = _random((H, W, 4), 5)
  rgba[..., 3] = np.where(np.arange(W) < W // 2, 0, 255)  # left half transparent, right half opaque
  PIL.Image.fromarray(rgba).save(root / "dogs/e.png")
  buffer = io.BytesIO()
  PIL.Image.fromarray(_random((H, W, 3), 6)).save(buffer, format="PNG")
  (root / "dogs/broken.png").write_bytes(buffer.getvalue()[:200])  # valid header, truncated pixel data
  (root / "dogs/garbage.jpg").write_bytes(b"\xff\xd8 not a jpeg")  # no readable header
  (root / "notes.txt").write_text("not an image")
  return root


def _images(directory, split="train"):
  dataset = data.load(f"folder:{directory}", split)
  return dataset, dataset.get(np.arange(dataset.num_examples))


def test_each_format_decodes_to_its_pixels_and_the_corrupt_file_is_skipped(source, tmp_path):
  info = prepared.prepare(source, tmp_path / "out", labels="subfolders", on_error="skip")
  dataset, batch = _images(tmp_path / "out")
  assert (dataset.image_shape, dataset.num_classes, info["class_names"]) == ((H, W, 3), 2, ["cats", "dogs"])
  assert [s["path"] for s in info["skipped"]] == ["dogs/garbage.jpg", "dogs/broken.png"]  # header, then pixels
  assert info["ignored"] == ["notes.txt"]
  # Sorted order: cats/a.png, cats/b.jpg, cats/rotated.jpg, dogs/c.webp, dogs/d.png, dogs/e.png.
  np.testing.assert_array_equal(batch["label"], [0, 0, 0, 1, 1, 1])
  images = batch["image"]
  np.testing.assert_array_equal(images[0], _random((H, W, 3), 0))
  np.testing.assert_array_equal(images[1], np.asarray(PIL.Image.open(source / "cats/b.jpg").convert("RGB")))
  rotated = PIL.ImageOps.exif_transpose(PIL.Image.open(source / "cats/rotated.jpg"))
  np.testing.assert_array_equal(images[2], np.asarray(rotated.convert("RGB")))
  np.testing.assert_array_equal(images[3], _random((H, W, 3), 3))
  np.testing.assert_array_equal(images[4], np.repeat(_random((H, W), 4)[..., None], 3, -1))  # gray in a RGB set
  rgba = _random((H, W, 4), 5)[..., :3]
  np.testing.assert_array_equal(images[5][:, :W // 2], 255)  # transparent: white
  np.testing.assert_array_equal(images[5][:, W // 2:], rgba[:, W // 2:])  # opaque: unchanged
  # The batched read (the fast loader's) returns the same records as single reads.
  items = dataset._source.__getitems__([5, 0])
  np.testing.assert_array_equal(items[0]["image"], images[5])
  assert [i["label"] for i in items] == [1, 0]
  # A zip of the same folder gives the same dataset.
  with zipfile.ZipFile(tmp_path / "images.zip", "w") as z:
    for path in sorted(source.rglob("*")):
      z.write(path, path.relative_to(source).as_posix())
  prepared.prepare(tmp_path / "images.zip", tmp_path / "from_zip", labels="subfolders", on_error="skip")
  _, zipped = _images(tmp_path / "from_zip")
  np.testing.assert_array_equal(zipped["image"], images)


def test_on_error_stop_lists_the_corrupt_file_and_writes_nothing(source, tmp_path):
  # Unreadable headers stop the run before any pixel is decoded; corrupt pixel data stops it after decoding.
  with pytest.raises(ValueError, match=r"(?s)1 image file\(s\) could not be read.*\n  dogs/garbage.jpg: .*skip"):
    prepared.prepare(source, tmp_path / "out")
  assert os.listdir(tmp_path) == []
  shutil.copytree(source, tmp_path / "src", ignore=shutil.ignore_patterns("garbage.jpg"))
  with pytest.raises(ValueError, match=r"(?s)1 image file\(s\) could not be read.*\n  dogs/broken.png: .*truncated"):
    prepared.prepare(tmp_path / "src", tmp_path / "out")
  assert os.listdir(tmp_path) == ["src"]


def test_resize_is_lanczos_of_the_centre_crop_and_gray_sets_stay_one_channel(source, tmp_path):
  info = prepared.prepare(source / "cats", tmp_path / "rgb", resolution=16, labels="none")
  _, batch = _images(tmp_path / "rgb")
  left = (W - H) // 2
  crop = PIL.Image.open(source / "cats/a.png").crop((left, 0, left + H, H))
  expected = crop.resize((16, 16), PIL.Image.Resampling.LANCZOS)
  np.testing.assert_array_equal(batch["image"][0], np.asarray(expected))
  assert info["num_classes"] == 0 and batch["image"].shape == (3, 16, 16, 3)
  gray = tmp_path / "gray"
  gray.mkdir()
  for i in range(2):
    PIL.Image.fromarray(_random((H, W), i)).save(gray / f"{i}.png")
  sixteen = _random((H, W), 2).astype(np.uint16) * 256 + 255  # 16-bit samples whose high byte is _random(..., 2)
  PIL.Image.fromarray(sixteen).save(gray / "2.png")
  prepared.prepare(gray, tmp_path / "gray_out")
  dataset, batch = _images(tmp_path / "gray_out")
  assert dataset.image_shape == (H, W, 1)
  np.testing.assert_array_equal(batch["image"][1, ..., 0], _random((H, W), 1))
  np.testing.assert_array_equal(batch["image"][2, ..., 0], _random((H, W), 2))
  prepared.prepare(gray, tmp_path / "gray_rgb", channels=3)
  assert _images(tmp_path / "gray_rgb")[0].image_shape == (H, W, 3)


@pytest.fixture(scope="module")
def ten(tmp_path_factory):
  """Ten 8x8 RGB PNGs whose pixel value is their index, and a dataset.json labelling image i as class i % 3."""
  root = tmp_path_factory.mktemp("ten")
  for i in range(10):
    PIL.Image.fromarray(np.full((8, 8, 3), i, np.uint8)).save(root / f"{i}.png")
  (root / "dataset.json").write_text(json.dumps({"labels": [[f"{i}.png", i % 3] for i in range(10)]}))
  return root


def _ids(directory, split):
  _, batch = _images(directory, split)
  return batch["image"][:, 0, 0, 0].tolist(), batch["label"].tolist()


def test_dataset_json_labels_and_a_seeded_holdout(ten, tmp_path):
  # labels=auto finds dataset.json; 1 worker keeps more decodes in flight than workers, which must stay in order.
  info = prepared.prepare(ten, tmp_path / "a", holdout=0.3, seed=1, workers=1)
  train, train_labels = _ids(tmp_path / "a", "train")
  test, test_labels = _ids(tmp_path / "a", "test")
  assert (len(train), len(test), info["num_classes"]) == (7, 3, 3)
  assert train == sorted(train) and test == sorted(test)  # each split in source order
  assert sorted(train + test) == list(range(10))
  assert train_labels == [i % 3 for i in train] and test_labels == [i % 3 for i in test]
  (tmp_path / "null.json").write_text('{"labels": null}')  # dataset_tool's file for an unlabelled set
  prepared.prepare(ten, tmp_path / "b", holdout=0.3, seed=1, labels=str(tmp_path / "null.json"))
  assert _ids(tmp_path / "b", "test") == (test, [0, 0, 0])  # same seed, same held-out images
  prepared.prepare(ten, tmp_path / "c", holdout=0.3, seed=2)
  assert _ids(tmp_path / "c", "test")[0] != test
  prepared.prepare(ten, tmp_path / "d")
  with pytest.raises(ValueError, match="--holdout=0.1"):
    data.load(f"folder:{tmp_path / 'd'}", "test")


def test_bad_input_gets_one_line_errors_before_anything_is_written(ten, tmp_path):
  labels = tmp_path / "labels.json"
  labels.write_text(json.dumps({"labels": [["0.png", 0], ["missing.png", 1]]}))
  cases = [
      (dict(source=tmp_path / "nothing"), "neither a folder nor a .zip"),
      (dict(labels=str(labels)), "names 1 file\\(s\\) that are not images in --source \\(e.g. 'missing.png'\\)"),
      (dict(labels="subfolders"), "--labels=subfolders needs every image in a class subfolder"),
      (dict(labels="subfolder"), "--labels=subfolder is not a file; pass auto, none, subfolders or the path"),
      (dict(labels=str(ten / "0.png")), "0.png is not valid JSON"),
      (dict(holdout=0.01), "leaves 10 for train and 0 for test"),
      (dict(holdout=1.0), "must be a fraction in \\[0, 1\\)"),
      (dict(resolution=0), "positive"),
      (dict(channels=2), "--channels"),
  ]
  for kwargs, message in cases:
    kwargs = {"source": ten, **kwargs}
    with pytest.raises((ValueError, FileNotFoundError), match=message):
      prepared.prepare(dest=tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists(), kwargs
  labels.write_text(json.dumps({"labels": [["0.png", 0]]}))
  with pytest.raises(ValueError, match="9 image\\(s\\) have no label in .*labels.json \\(e.g. '1.png'\\)"):
    prepared.prepare(ten, tmp_path / "out", labels=str(labels))
  (tmp_path / "empty").mkdir()
  (tmp_path / "empty/readme.txt").write_text("")
  with pytest.raises(ValueError, match="holds no .png/.jpg/.jpeg/.webp images"):
    prepared.prepare(tmp_path / "empty", tmp_path / "out")
  PIL.Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(tmp_path / "empty/odd.png")
  PIL.Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "empty/square.png")
  with pytest.raises(ValueError, match="2 different sizes .* pass --resolution=N"):
    prepared.prepare(tmp_path / "empty", tmp_path / "out")
  prepared.prepare(ten, tmp_path / "out")
  with pytest.raises(ValueError, match="already holds a prepared dataset; pass --overwrite"):
    prepared.prepare(ten, tmp_path / "out")
  prepared.prepare(tmp_path / "empty", tmp_path / "out", resolution=4, overwrite=True)
  assert data.load(f"folder:{tmp_path / 'out'}", "train").num_examples == 2


def test_an_interrupted_run_leaves_nothing_that_looks_complete(ten, tmp_path, monkeypatch):
  add = prepared._ShardWriter.add
  calls = []

  def failing_add(self, record):
    calls.append(1)
    if len(calls) == 4:
      raise KeyboardInterrupt  # as Ctrl-C in the middle of writing
    add(self, record)

  monkeypatch.setattr(prepared._ShardWriter, "add", failing_add)
  with pytest.raises(KeyboardInterrupt):
    prepared.prepare(ten, tmp_path / "out")
  assert os.listdir(tmp_path) == []
  monkeypatch.setattr(prepared._ShardWriter, "add", add)
  # A killed run (no cleanup) leaves DEST.partial without info.json: it is not loadable, and the next run replaces it.
  (tmp_path / "out.partial").mkdir()
  (tmp_path / "out.partial/train-00000.array_record").write_bytes(b"half")
  with pytest.raises(FileNotFoundError, match="not a complete prepared dataset .* python -m experiments.prepare_data"):
    data.load(f"folder:{tmp_path / 'out.partial'}", "train")
  prepared.prepare(ten, tmp_path / "out")
  assert sorted(os.listdir(tmp_path)) == ["out"]
  (tmp_path / "out/train-00000.array_record").unlink()  # e.g. a partial copy to another machine
  with pytest.raises(FileNotFoundError, match="lacks train-00000.array_record .* prepare it again"):
    data.load(f"folder:{tmp_path / 'out'}", "train")


def test_cli_prepares_with_progress_and_reports_bad_input_in_one_line(ten, tmp_path):
  def run(*flags):
    return subprocess.run([sys.executable, "-m", "experiments.prepare_data", *flags], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "JAXGEN_HUGEPAGES": "0"})

  out = run(f"--source={ten}", f"--dest={tmp_path / 'out'}", "--resolution=4", "--holdout=0.2")
  assert out.returncode == 0, out.stderr
  assert "ETA" in out.stderr and "splits {'test': 2, 'train': 8}" in out.stderr
  out = run(f"--source={ten}", f"--dest={tmp_path / 'out'}")
  assert out.returncode != 0 and "Traceback" not in out.stderr
  assert out.stderr.strip().splitlines()[-1].startswith("error: --dest=") and "--overwrite" in out.stderr


def test_a_prepared_folder_trains_end_to_end_and_mismatches_are_named(tmp_path):
  images = tmp_path / "digits"
  images.mkdir()
  for i in range(24):
    PIL.Image.fromarray(_random((28, 28), i)).save(images / f"{i:02d}.png")
  prepared.prepare(images, tmp_path / "prepared", holdout=0.25)
  config = glow_quickstart.get_config("smoke")
  config.dataset = f"folder:{tmp_path / 'prepared'}"
  config.total_steps = 2
  state = trainer.train_and_evaluate(config, str(tmp_path / "run"))
  assert int(state["step"]) == 2
  rows = [json.loads(line) for line in open(tmp_path / "run/metrics.jsonl")]
  assert any(np.isfinite(r.get("eval/bpd", np.nan)) for r in rows)
  config.model.image_shape = (32, 32, 1)
  with pytest.raises(ValueError, match="--config.model.image_shape='\\(28, 28, 1\\)' .*--resolution"):
    trainer.setup(config)
  config.model.update(image_shape=(28, 28, 1), num_classes=10)
  with pytest.raises(ValueError, match="has no labels; set --config.model.num_classes=0"):
    trainer.setup(config)
  prepared.prepare(images, tmp_path / "no_holdout")
  config.model.num_classes = 0
  config.dataset = f"folder:{tmp_path / 'no_holdout'}"
  with pytest.raises(ValueError, match="--holdout"):
    trainer.setup(config)
