r"""Writes a trained model's figures, what its family draws (`Family.figures`), under DIR/samples/.

python -m experiments.sample --config=experiments/configs/NAME.py --workdir=DIR

Which figures a family draws (temperature sweeps, interpolations, completions, truncation sweeps, style mixing) is
said by its `figures` docstring. Their options are config.figures keys, checked against the family's
`figure_options`, e.g. --config.figures.temperatures=0.5,0.7 --config.figures.num=4.
"""
from absl import flags
from etils import epath
import jax

from experiments import cli
from jaxgen.training import family
from jaxgen.training import trainer
from jaxgen.training import writers

_CONFIG = cli.define_config_flag()
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory of a training run.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
flags.mark_flags_as_required(["config", "workdir"])


def write_figures(s, state, out, seed=0):
  """Writes the family's figures of `state` under `out` (a local or gs://... path); returns their paths."""
  pictures = s.family.figures(s, state, seed=seed, **family.figure_options(s.family, s.config))
  paths = []
  for name, picture in pictures.items():
    paths.append(epath.Path(out) / name)
    writers.save_png(paths[-1], picture, scale=2)
  return paths


def main(argv):
  del argv
  with cli.clear_errors():
    s, state = trainer.restore_for_eval(_CONFIG.value, _WORKDIR.value)
    paths = write_figures(s, state, epath.Path(_WORKDIR.value) / "samples", _SEED.value)
  if jax.process_index() == 0:  # only process 0 writes the files (writers.save_png)
    print("\n".join(map(str, paths)))


if __name__ == "__main__":
  cli.run(main)
