"""One process of a multi-process test: joins the job through experiments.cli, then trains each job of a JSON spec.

python tests/multihost/child.py SPEC.json --multihost --coordinator_address=... --num_processes=N --process_id=I

SPEC.json: {"jobs": [{"config": "experiments/configs/NAME.py:smoke", "workdir": DIR, "overrides": {...}}, ...],
"record": PATH}. Each job is `trainer.train_and_evaluate`. What this process did goes to PATH.<process_index>.json:
per job, the example indices it read from the train split (one sorted list per `Dataset.get` call) and from the eval
split, and the PNG files it saved.
"""
import dataclasses
import importlib.util
import json
import logging
import os
import sys
import time

from absl import flags
import jax
from PIL import Image

sys.path.insert(0, os.getcwd())  # the repository (the parent runs this from its root)

from experiments import cli  # noqa: E402  (defines the --multihost flags)
from jaxgen import data  # noqa: E402
from jaxgen.training import trainer  # noqa: E402

_SPEC = sys.argv.pop(1)


class _CountingDataset(data.Dataset):
  """A Dataset that appends the indices of every `get` to `log`."""
  log = None

  def get(self, indices):
    self.log.append(sorted(int(i) for i in indices))
    return super().get(indices)


def _counting(dataset, log):
  out = _CountingDataset(**{f.name: getattr(dataset, f.name) for f in dataclasses.fields(dataset)})
  object.__setattr__(out, "log", log)
  return out


def main():
  handler = logging.StreamHandler(sys.stderr)
  handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
  logging.getLogger("jaxgen").addHandler(handler)
  logging.getLogger("jaxgen").setLevel(logging.INFO)
  flags.FLAGS(sys.argv)
  cli.initialize_distributed()
  with open(_SPEC) as f:
    spec = json.load(f)
  record = {}
  current = {}
  input_init, input_split, png_save = data.Input.__init__, data.Input.split, Image.Image.save

  def init(self, *args, **kwargs):
    input_init(self, *args, **kwargs)
    self.train = _counting(self.train, current["train"])

  def split(self, name):
    if name not in self._splits:
      self._splits[name] = _counting(input_split(self, name), current["eval"])
    return self._splits[name]

  def save(self, fp, *args, **kwargs):
    current["png"].append(str(fp))
    return png_save(self, fp, *args, **kwargs)

  data.Input.__init__, data.Input.split, Image.Image.save = init, split, save
  for job in spec["jobs"]:
    current.update(train=[], eval=[], png=[])
    path, _, arg = job["config"].partition(":")
    config = _load_config(path, arg or None)
    with config.unlocked():
      config.update_from_flattened_dict(job.get("overrides", {}))
    cpu = time.process_time()
    trainer.train_and_evaluate(config, job["workdir"])
    logging.getLogger("jaxgen").info("job %s: %.1f s CPU", job["workdir"], time.process_time() - cpu)
    record[job["workdir"]] = dict(current)
  with open(f"{spec['record']}.{jax.process_index()}.json", "w") as f:
    json.dump(record, f)


def _load_config(path, arg):
  module_spec = importlib.util.spec_from_file_location("experiment_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg)


if __name__ == "__main__":
  main()
