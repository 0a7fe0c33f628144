r"""Projects an image into a trained StyleGAN2's latent space: finds w (W, or one w per layer with --w_plus) and the
noise maps whose image matches it (StyleGAN2 Sec. 5; the schedule of stylegan2-ada-pytorch projector.py).

python -m experiments.project --workdir=DIR --image=PATH [--num_steps=1000] [--w_plus] [--distance=classifier]
python -m experiments.project --workdir=DIR --image=PATH --distance=vgg16 --vgg16=vgg16_lpips.npz   # the official

The image (PNG, JPEG, ... of any size) is centre-cropped and resized to the model's images, in its colour mode.
Writes OUT (default DIR/projection/NAME, NAME the image's file name without extension): target.png, proj.png,
projected_w.npz (w [1, num_ws, w_dim], as the official file, and the noise maps), progress.png (the target, then
the projection at ten steps of the run) and progress.gif (target | projection every --video_every steps), and
prints the feature distance and the RMSE to the target. The config is DIR/config.json unless --config is given.
--distance=vgg16 is the official projector's VGG16 LPIPS; FILE is converted once from torchvision's and lpips's
weights by jaxgen.convert.vgg16.write_npz (its docstring says where to get them).
"""
import io

from absl import flags
from etils import epath
import jax
import numpy as np
from PIL import Image

from experiments import cli
from jaxgen import prepared
from jaxgen.gan import stylegan2 as sg
from jaxgen.metrics import vgg16
from jaxgen.training import checkpoints
from jaxgen.training import trainer
from jaxgen.training import writers

_CONFIG = cli.define_config_flag()  # default: WORKDIR/config.json
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory of a StyleGAN2 run (experiments.train or convert).",
                                   allow_override=True)  # tests import it beside other scripts' --workdir
_IMAGE = flags.DEFINE_string("image", None, "Image file to project.")
_OUT = flags.DEFINE_string("out", None, "Output directory (default WORKDIR/projection/NAME).")
_NUM_STEPS = flags.DEFINE_integer("num_steps", 1000, "Optimisation steps (official: 1000).")
_W_PLUS = flags.DEFINE_bool("w_plus", False, "Optimise one w per layer (W+) instead of one w for all (W).")
_NOISE = flags.DEFINE_bool("optimize_noise", True, "Optimise the noise maps, regularised (official); else keep the "
                           "model's constant noise.")
_DISTANCE = flags.DEFINE_enum("distance", "classifier", sg.DISTANCES, "Feature distance: 'classifier' (LPIPS-style, "
                              "features of the offline classifier trained on the run's dataset), 'pixel', or "
                              "'vgg16' (the official VGG16 LPIPS; needs --vgg16).")
_VGG16 = flags.DEFINE_string("vgg16", None, "With --distance=vgg16: the .npz of VGG16 LPIPS weights that "
                             "jaxgen.convert.vgg16.write_npz wrote.")
_W_AVG_SAMPLES = flags.DEFINE_integer("w_avg_samples", sg.W_AVG_SAMPLES, "Mapped z for w_avg and w_std.")
_SEED = flags.DEFINE_integer("seed", 303, "Seed of the initial noise maps and the noise on w (official: 303).")
_VIDEO_EVERY = flags.DEFINE_integer("video_every", 10, "Steps between the frames of progress.gif (0: no GIF).")
flags.mark_flags_as_required(["workdir", "image"])


def save_gif(path, frames, duration_ms=100):
  """uint8 [T, H, W, C] frames -> an animated GIF (looping), through epath."""
  frames = [Image.fromarray(f[..., 0] if f.shape[-1] == 1 else f) for f in np.asarray(frames)]
  buffer = io.BytesIO()
  frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=duration_ms, loop=0)
  epath.Path(path).write_bytes(buffer.getvalue())


def write_projection(s, state, target, out, projection, image, video_every=10):
  """Writes the files the module docstring lists under `out`; returns their paths."""
  out = epath.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  paths = {name: out / name for name in ("target.png", "proj.png", "projected_w.npz", "progress.png")}
  writers.save_png(paths["target.png"], target)
  writers.save_png(paths["proj.png"], image)
  noise = {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(v)
           for path, v in jax.tree_util.tree_leaves_with_path(projection.noise)}
  buffer = io.BytesIO()
  np.savez(buffer, w=np.asarray(projection.ws)[None], **{f"noise/{name}": v for name, v in noise.items()})
  paths["projected_w.npz"].write_bytes(buffer.getvalue())
  ws_steps = np.asarray(projection.ws_steps)  # [steps, num_ws, w_dim]
  g = state["ema_params"]
  picks = np.unique(np.linspace(0, len(ws_steps) - 1, 10).round().astype(int))
  frames = sg.render(g, ws_steps[picks], projection.noise, model=s.model)
  writers.save_png(paths["progress.png"], writers.image_grid(np.concatenate([target[None], frames]),
                                                             columns=len(frames) + 1), scale=2)
  if video_every:
    picks = np.arange(0, len(ws_steps), video_every).tolist() + [len(ws_steps) - 1]
    frames = sg.render(g, ws_steps[picks], projection.noise, model=s.model)
    paths["progress.gif"] = out / "progress.gif"
    save_gif(paths["progress.gif"], [np.concatenate([target, f], axis=1) for f in frames])
  return list(paths.values())


def main(argv):
  del argv
  with cli.clear_errors():
    workdir = _WORKDIR.value
    config = _CONFIG.value or checkpoints.read_config(workdir)
    if config.get("model_name") != "gan.stylegan2":
      raise ValueError(f"{workdir} holds a {config.get('model_name')} run; the projector needs a StyleGAN2 "
                       f"(gan.stylegan2). Glow and NVAE encode images exactly: python -m experiments.encode.")
    if _NUM_STEPS.value < 1 or _W_AVG_SAMPLES.value < 2 or _VIDEO_EVERY.value < 0:
      raise ValueError("--num_steps must be >= 1, --w_avg_samples >= 2 and --video_every >= 0.")
    vgg16_weights = None
    if _DISTANCE.value == "vgg16":
      if not _VGG16.value:
        raise ValueError(f"--distance=vgg16 needs --vgg16=FILE, the VGG16 LPIPS weights ({vgg16.HOW_TO_CONVERT}).")
      vgg16_weights = vgg16.load_variables(_VGG16.value)  # a missing or wrong file fails before the run is restored
    elif _VGG16.value:
      raise ValueError(f"--vgg16 is read only with --distance=vgg16 (got --distance={_DISTANCE.value}); add "
                       f"--distance=vgg16 or leave --vgg16 out.")
    image_shape = tuple(config.model.get("image_shape", sg.Model.image_shape))
    target = prepared.read_image(_IMAGE.value, image_shape)  # a bad file fails before the run is restored
    s, state = trainer.restore_for_eval(config, workdir)
    projection, image = sg.project_image(
        s, state, target, steps=_NUM_STEPS.value, w_plus=_W_PLUS.value, optimize_noise=_NOISE.value,
        distance=_DISTANCE.value, w_avg_samples=_W_AVG_SAMPLES.value, seed=_SEED.value, vgg16_weights=vgg16_weights)
    out = _OUT.value or epath.Path(workdir) / "projection" / epath.Path(_IMAGE.value).stem
    paths = write_projection(s, state, target, out, projection, image, _VIDEO_EVERY.value)
  if jax.process_index() == 0:
    rmse = float(np.sqrt(np.mean(np.square(image.astype(np.float64) - target)))) / 255.0
    print(f"projected {_IMAGE.value} in {_NUM_STEPS.value} steps ({'W+' if _W_PLUS.value else 'W'}, "
          f"{_DISTANCE.value} distance): distance {float(projection.distance):.4g}, rmse {rmse:.4f} (pixels on [0, 1])")
    print("\n".join(map(str, paths)))


if __name__ == "__main__":
  cli.run(main)
