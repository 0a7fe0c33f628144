r"""Encodes the user's own images with a trained Glow or NVAE: latents, reconstructions, interpolations, and each
image's reconstruction error and bits/dim.

python -m experiments.encode --workdir=DIR --images=a.png,b.png[,...] [--interpolation_steps=8] [--sample_posterior]

Each image (PNG, JPEG, ... of any size) is centre-cropped and resized to the model's images, in its colour mode
(and binarized as the run's data where it trained on binarized images). Glow's latents are exact (its inverse);
NVAE's are every group's posterior mean, or one posterior sample with --sample_posterior. Writes OUT (default
DIR/encode): reconstructions.png (the images, and under them their reconstructions), interpolations.png (one row
per consecutive pair: decoded linear mixtures of the two latents, the ends being the reconstructions; with two or
more images) and latents.npz, and prints per image the RMSE of the reconstruction (pixels on [0, 1]) and the
family's bits/dim (Glow: the exact NLL; NVAE: the negative ELBO, one posterior sample). The config is
DIR/config.json unless --config is given. StyleGAN2 has no encoder: python -m experiments.project.
"""
import io

from absl import flags
from etils import epath
import jax
import numpy as np

from experiments import cli
from jaxgen import data
from jaxgen import prepared
from jaxgen.training import checkpoints
from jaxgen.training import figures
from jaxgen.training import trainer
from jaxgen.training import writers

_CONFIG = cli.define_config_flag()  # default: WORKDIR/config.json
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory of a Glow or NVAE run (experiments.train or convert).",
                                   allow_override=True)  # tests import it beside other scripts' --workdir
_IMAGES = flags.DEFINE_list("images", None, "Image files to encode.")
_OUT = flags.DEFINE_string("out", None, "Output directory (default WORKDIR/encode).")
_STEPS = flags.DEFINE_integer("interpolation_steps", 8, "Images per interpolation row (ends included).")
_SAMPLE = flags.DEFINE_bool("sample_posterior", False, "NVAE: one posterior sample instead of the means.")
_LABEL = flags.DEFINE_integer("label", 0, "Class of the images for a class-conditional model.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the posterior sample and of the ELBO's sample.")
flags.mark_flags_as_required(["workdir", "images"])


def read_images(paths, image_shape, binarize_mode="", seed=0):
  """uint8 [N, H, W, C] of the image files, as the model's data (`prepared.read_image`, then binarized)."""
  images = np.stack([prepared.read_image(path, image_shape) for path in paths])
  return data.binarize(images, binarize_mode, [seed])


def encode_images(s, state, images, labels, interpolation_steps=8, rng=None):
  """{latents, reconstructions uint8 [N, H, W, C], interpolations uint8 [(N - 1) * steps, H, W, C] or None, rmse
  [N] (pixels on [0, 1]), results [{name: float}] (`trainer.evaluate_each`)} for `images` of a family with an
  encoder."""
  if s.family.encode is None:
    raise ValueError(f"{s.config.model_name} has no encoder; the families with one are Glow and NVAE (StyleGAN2: "
                     f"python -m experiments.project).")
  latents = s.family.encode(s, state, images, labels, rng)
  pairs = [(i, i + 1) for i in range(len(images) - 1)]
  mixed = figures.interpolation_latents(latents, pairs, interpolation_steps)
  # One decoder call for the reconstructions and the interpolations.
  both = jax.tree.map(lambda a, b: np.concatenate([a, b]), latents, mixed)
  decoded = s.family.decode(s, state, both, np.concatenate([labels, np.repeat(labels[:-1], interpolation_steps)]))
  rec, interp = decoded[:len(images)], (decoded[len(images):] if pairs else None)
  scale = 1.0 if s.config.binarize else 255.0
  rmse = np.sqrt(np.mean(np.square((rec.astype(np.float64) - images) / scale), axis=(1, 2, 3)))
  return dict(latents=latents, reconstructions=rec, interpolations=interp, rmse=rmse,
              results=trainer.evaluate_each(s, state, images, labels))


def write_encodings(out, images, encoded, binary=False, interpolation_steps=8):
  """Writes reconstructions.png, interpolations.png (with two or more images) and latents.npz; returns the paths."""
  out = epath.Path(out)
  paths = [out / "reconstructions.png", out / "latents.npz"]
  writers.save_png(paths[0], figures.grid(np.concatenate([images, encoded["reconstructions"]]),
                                          columns=len(images), binary=binary), scale=2)
  leaves = jax.tree_util.tree_leaves_with_path(encoded["latents"])
  buffer = io.BytesIO()
  np.savez(buffer, **{"z" + "".join(str(getattr(k, "idx", getattr(k, "key", k))) for k in path): np.asarray(v)
                      for path, v in leaves})
  paths[1].write_bytes(buffer.getvalue())
  if encoded["interpolations"] is not None:
    paths.append(out / "interpolations.png")
    writers.save_png(paths[-1], figures.grid(encoded["interpolations"], columns=interpolation_steps, binary=binary),
                     scale=2)
  return paths


def main(argv):
  del argv
  with cli.clear_errors():
    workdir = _WORKDIR.value
    config = _CONFIG.value or checkpoints.read_config(workdir)
    if _STEPS.value < 2:
      raise ValueError(f"--interpolation_steps={_STEPS.value} must be >= 2 (the two ends).")
    s, state = trainer.restore_for_eval(config, workdir)
    images = read_images(_IMAGES.value, s.train_data.image_shape, s.config.binarize, _SEED.value)
    labels = np.full((len(images),), _LABEL.value, np.int32)
    if s.train_data.num_classes and not 0 <= _LABEL.value < s.train_data.num_classes:
      raise ValueError(f"--label={_LABEL.value} must be in 0 .. {s.train_data.num_classes - 1}.")
    rng = jax.random.key(_SEED.value) if _SAMPLE.value else None
    encoded = encode_images(s, state, images, labels, _STEPS.value, rng)
    paths = write_encodings(_OUT.value or epath.Path(workdir) / "encode", images, encoded, bool(s.config.binarize),
                            _STEPS.value)
  if jax.process_index() == 0:
    for path, rmse, results in zip(_IMAGES.value, encoded["rmse"], encoded["results"]):
      bits = ", ".join(f"{k} {v:.4f}" for k, v in results.items() if k.endswith("bpd"))
      print(f"{path}: reconstruction rmse {rmse:.4f}, {bits}")
    print("\n".join(map(str, paths)))


if __name__ == "__main__":
  cli.run(main)
