r"""Turns a folder (searched recursively) or a zip of PNG / JPEG / WebP images into a dataset jaxgen trains on.

python -m experiments.prepare_data --source=~/my_images --dest=/data/my_images --resolution=64 --holdout=0.05
python -m experiments.train --config=experiments/configs/glow_quickstart.py --workdir=/tmp/run \
  --config.dataset=folder:/data/my_images --config.model.image_shape='(64, 64, 3)'

--dest receives raw pixels in array_record shards plus info.json (jaxgen/prepared.py has the format), written
atomically: an interrupted run leaves only DEST.partial, which the next run removes. A bucket (--dest=gs://B/NAME)
gets the shards of a local run (in TMPDIR) uploaded, info.json last; train with --config.dataset=folder:gs://B/NAME.
"""
from absl import app
from absl import flags

from experiments import cli
from jaxgen import prepared

_SOURCE = flags.DEFINE_string("source", None, "Folder (searched recursively) or .zip of PNG / JPEG / WebP images.")
_DEST = flags.DEFINE_string("dest", None, "Directory or bucket path (gs://...) to write; train with "
                                 "--config.dataset=folder:DEST.")
_RESOLUTION = flags.DEFINE_integer("resolution", None, "Centre-crop each image to a square and resize it to NxN "
                                   "(Lanczos); without it every image must already have the same size.")
_CHANNELS = flags.DEFINE_enum("channels", "auto", ["auto", "1", "3"],
                              "1 (grayscale) or 3 (RGB) for the whole set; auto: 1 if every image is grayscale.")
_LABELS = flags.DEFINE_string("labels", "auto", "auto (the source's dataset.json if it has one, else none), none, "
                              "subfolders (one folder per class) or the path of a StyleGAN2-ADA dataset.json.")
_HOLDOUT = flags.DEFINE_float("holdout", 0.0, "Fraction of the images held out as split 'test' (seeded by --seed).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the held-out images' choice.")
_ON_ERROR = flags.DEFINE_enum("on_error", "stop", ["stop", "skip"], "Unreadable images: stop (list them, write "
                              "nothing) or skip (leave them out and list them at the end and in info.json).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace a dataset already prepared at --dest.")
_WORKERS = flags.DEFINE_integer("workers", 0, "Decoding threads (0: one per CPU core).")
flags.mark_flags_as_required(["source", "dest"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  channels = _CHANNELS.value if _CHANNELS.value == "auto" else int(_CHANNELS.value)
  with cli.clear_errors():
    prepared.prepare(_SOURCE.value, _DEST.value, resolution=_RESOLUTION.value, channels=channels,
                     labels=_LABELS.value, holdout=_HOLDOUT.value, seed=_SEED.value, on_error=_ON_ERROR.value,
                     overwrite=_OVERWRITE.value, workers=_WORKERS.value or None)


if __name__ == "__main__":
  cli.run(main)
