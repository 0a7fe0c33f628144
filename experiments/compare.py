r"""Compares trained runs of any families on the same data: one Markdown table, one JSON file, one PNG of samples.

python -m experiments.compare --workdirs=/tmp/glow,/tmp/nvae,/tmp/lmconv,/tmp/stylegan2 --out=/tmp/comparison
python -m experiments.compare --configs=experiments/configs/glow_quickstart.py,... --budget=images:64000 \
  --workdir_root=/tmp/runs --out=/tmp/comparison     # trains each config for the same budget first

Every run is measured with the same settings (`jaxgen.metrics.comparison`, which says what each column is): bits/dim
where the family has a likelihood, FID / KID / precision / recall against one reference set in one feature space
with the same number of samples, reconstruction through the family's latents, completion of a hidden region,
sampling time, parameters and training budget. A measure a family cannot give is "none". Runs trained on different
datasets (or binarizations) are refused. Writes OUT/comparison.md, comparison.json and comparison.png.
"""
import importlib.util
import os

from absl import flags

from experiments import cli
from jaxgen.metrics import comparison

_WORKDIRS = flags.DEFINE_list("workdirs", [], "Run directories to compare (written by experiments.train).")
_CONFIGS = flags.DEFINE_list("configs", [], "Config files (FILE.py or FILE.py:VARIANT) to train first, each for "
                             "--budget, into --workdir_root/NAME; then compared.")
_BUDGET = flags.DEFINE_string("budget", None, "With --configs: steps:N or images:N, the same for every config.")
_WORKDIR_ROOT = flags.DEFINE_string("workdir_root", None, "With --configs: where the runs are trained.")
_OUT = flags.DEFINE_string("out", "comparison", "Output directory.")
_SPLIT = flags.DEFINE_string("split", "test", "Split for likelihoods, the reference set and reconstructions.")
_NUM_EXAMPLES = flags.DEFINE_integer("num_examples", 0, "Images of the split used (0: all).")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 0, "Samples per run for FID/KID/PR (0: as many as real images).")
_EXTRACTOR = flags.DEFINE_string("extractor", "classifier", "Feature extractor: classifier (offline) or inception.")
_INCEPTION_PATH = flags.DEFINE_string("inception_path", "", "Inception weights (.npz) for --extractor=inception.")
_IW_SAMPLES = flags.DEFINE_integer("iw_samples", 100, "K of NVAE's importance-weighted bound (0: ELBO only).")
_PROJECT_STEPS = flags.DEFINE_integer("project_steps", 100, "StyleGAN2 projector steps per image.")
_NUM_RECONSTRUCT = flags.DEFINE_integer("num_reconstruct", 16, "Images reconstructed and completed per run.")
_MISSING = flags.DEFINE_string("missing", "top", "Hidden region for completion: top, bottom, left, right, center.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data_dir for every run (default: each run's own).")
_DATASET = flags.DEFINE_string("dataset", None, "With --configs: train every config on this dataset instead of its "
                               "own (e.g. mnist, with --data_dir).")


def load_config(spec):
  """FILE.py[:VARIANT] -> the file's get_config(VARIANT)."""
  path, _, variant = spec.partition(":")
  if not os.path.exists(path):
    raise FileNotFoundError(f"--configs names {path}, which does not exist; pass experiments/configs/NAME.py.")
  module_spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(variant or None)


def train_configs(specs, budget, root, data_dir=None, dataset=None):
  """Trains every FILE.py[:VARIANT] for the same budget into root/FILE (`comparison.train_for_budget`), on `dataset`
  and `data_dir` where given."""
  configs = [load_config(spec) for spec in specs]
  for config in configs:
    if data_dir is not None:
      config.data_dir = data_dir
    if dataset is not None:
      config.dataset = dataset
  names = [os.path.basename(spec.partition(":")[0])[:-3] for spec in specs]
  return comparison.train_for_budget(configs, names, budget, root)


def main(argv):
  del argv
  with cli.clear_errors():
    if bool(_WORKDIRS.value) == bool(_CONFIGS.value):
      raise ValueError("Pass either --workdirs=DIR1,DIR2,... or --configs=FILE1,FILE2,... with --budget.")
    options = comparison.Options(
        split=_SPLIT.value, num_examples=_NUM_EXAMPLES.value, num_samples=_NUM_SAMPLES.value,
        sample_metrics=dict(extractor=_EXTRACTOR.value, inception_path=_INCEPTION_PATH.value),
        iw_samples=_IW_SAMPLES.value, project_steps=_PROJECT_STEPS.value, num_reconstruct=_NUM_RECONSTRUCT.value,
        missing=_MISSING.value, data_dir=_DATA_DIR.value)
    comparison.check_options(options)
    workdirs = _WORKDIRS.value or train_configs(_CONFIGS.value, _BUDGET.value, _WORKDIR_ROOT.value, _DATA_DIR.value,
                                                   _DATASET.value)
    rows, settings, panels = comparison.measure(workdirs, options)
    paths = comparison.write(_OUT.value, rows, settings, panels)
  print(comparison.markdown(rows, settings))
  print("\n".join(paths))


if __name__ == "__main__":
  cli.run(main)
