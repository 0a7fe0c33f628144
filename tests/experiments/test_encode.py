"""experiments.encode and the projector command's pieces on the user's own image files: reading (crop, resize,
colour mode, one-line errors), Glow's exact encoding, NVAE's posterior-mean encoding equal to its reconstruction,
interpolation rows whose ends are the reconstructions, per-image bits/dim, and the files written."""
import os
import subprocess
import sys

import jax
import numpy as np
from PIL import Image
import pytest

from experiments import encode
from experiments.configs import glow_quickstart
from experiments.configs import nvae_quickstart
from experiments.configs import stylegan2_quickstart
from jaxgen import prepared
from jaxgen.training import checkpoints
from jaxgen.training import trainer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _write(path, array):
  Image.fromarray(array).save(path)
  return str(path)


def test_read_image_crops_resizes_and_matches_colour_mode(tmp_path):
  wide = np.zeros((20, 60, 3), np.uint8)
  wide[:, 20:40] = (255, 0, 0)  # the centred square is pure red; the sides are black
  rgb = prepared.read_image(_write(tmp_path / "wide.png", wide), (10, 10, 3))
  assert rgb.shape == (10, 10, 3) and rgb[..., 0].min() > 240 and rgb[..., 1:].max() < 15
  gray = prepared.read_image(str(tmp_path / "wide.png"), (8, 8, 1))  # RGB -> L: red is 0.299 * 255
  assert gray.shape == (8, 8, 1) and abs(int(gray[4, 4, 0]) - 76) <= 2
  as_rgb = prepared.read_image(_write(tmp_path / "g.png", np.full((5, 7), 200, np.uint8)), (4, 4, 3))
  assert as_rgb.shape == (4, 4, 3) and (as_rgb == 200).all()
  with pytest.raises(FileNotFoundError, match="does not exist"):
    prepared.read_image(str(tmp_path / "missing.png"), (4, 4, 1))
  (tmp_path / "bad.png").write_text("not an image")
  with pytest.raises(ValueError, match="pass a PNG or JPEG"):
    prepared.read_image(str(tmp_path / "bad.png"), (4, 4, 1))


def _setup(config):
  config.batch_size = config.eval_batch_size = jax.device_count()
  s = trainer.setup(config)
  return s, s.init()


@pytest.fixture(scope="module")
def user_images(tmp_path_factory):
  root = tmp_path_factory.mktemp("images")
  rng = np.random.default_rng(0)
  return [_write(root / f"{i}.png", rng.integers(0, 256, (30 + 10 * i, 40, 3), dtype=np.uint8)) for i in range(3)]


def test_glow_encoding_is_exact_with_interpolations_and_bits(user_images, tmp_path):
  s, state = _setup(glow_quickstart.get_config("smoke"))
  images = encode.read_images(user_images, s.train_data.image_shape)
  labels = np.zeros(len(images), np.int32)
  out = encode.encode_images(s, state, images, labels, interpolation_steps=4)
  np.testing.assert_array_equal(out["rmse"], 0.0)  # the exact inverse
  interp = out["interpolations"].reshape((2, 4) + images.shape[1:])
  np.testing.assert_array_equal(interp[:, 0], images[:2])  # each row's ends are the images (exact reconstructions)
  np.testing.assert_array_equal(interp[:, -1], images[1:])
  assert not (interp[:, 1] == interp[:, 0]).all()  # the middle is a mixture, not a copy
  bpd = [r["bpd"] for r in out["results"]]
  assert len(bpd) == 3 and all(0 < b < 16 for b in bpd) and len(set(bpd)) == 3
  paths = encode.write_encodings(tmp_path, images, out, interpolation_steps=4)
  assert {p.name for p in paths} == {"reconstructions.png", "latents.npz", "interpolations.png"}
  grid = np.asarray(Image.open(tmp_path / "interpolations.png"))
  assert grid.shape[:2] == (2 * (2 * (28 + 1) + 1), 2 * (4 * (28 + 1) + 1))
  assert len(np.load(tmp_path / "latents.npz").files) == len(jax.tree.leaves(out["latents"]))


def test_nvae_posterior_mean_decodes_to_its_reconstruction_and_samples_differ(user_images):
  config = nvae_quickstart.get_config("smoke")
  config.iw_samples = 0  # the ELBO alone: one compilation less
  s, state = _setup(config)
  images = encode.read_images(user_images[:2], s.train_data.image_shape, s.config.binarize)
  assert set(np.unique(images)) <= {0, 1}  # binarized as the run's data
  labels = np.zeros(2, np.int32)
  out = encode.encode_images(s, state, images, labels, interpolation_steps=3)
  want, _ = s.family.reconstruct(s, state, images, labels)
  np.testing.assert_array_equal(out["reconstructions"], want)
  np.testing.assert_allclose(out["rmse"], np.sqrt(np.mean(np.square(want - images.astype(float)), axis=(1, 2, 3))))
  sampled = s.family.encode(s, state, images, labels, jax.random.key(1))
  diff = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), sampled, out["latents"])
  assert max(jax.tree.leaves(diff)) > 1e-3
  assert {"nelbo_bpd"} <= set(out["results"][0])
  assert out["interpolations"].shape == (3,) + images.shape[1:]


def test_project_command_rejects_a_bad_image_in_one_line_before_restoring(tmp_path):
  """experiments.project reads the image before the run: a run directory with only config.json (no checkpoint)
  still gives the image's error, in one line without a traceback."""
  config = stylegan2_quickstart.get_config("smoke")
  checkpoints.check_workdir_config(str(tmp_path), config)
  (tmp_path / "bad.png").write_text("not an image")
  out = subprocess.run([sys.executable, "-m", "experiments.project", f"--workdir={tmp_path}",
                        f"--image={tmp_path / 'bad.png'}"], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert out.returncode != 0 and "Traceback" not in out.stderr
  assert out.stderr.strip().splitlines()[-1].startswith("error: ") and "pass a PNG or JPEG" in out.stderr
