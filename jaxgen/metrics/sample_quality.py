"""Sample-quality metrics for any family: FID, KID and precision/recall of a model's samples against real images.

Features come from one of two extractors, chosen by `config.sample_metrics` (a dict; every key optional):

  extractor            "classifier" (default): the offline classifier of `jaxgen.metrics.classifier`, trained by
                       jaxgen on the dataset's own train split the first time it is needed and cached on disk;
                       "inception": Inception-v3 pool3 (`jaxgen.metrics.inception`) with weights from
                       `inception_path`, the numbers the literature reports.
  inception_path       an .npz written as the `jaxgen.metrics.inception` docstring shows (converted public weights).
  inception_resize     "pytorch_fid" (default) or "stylegan2_ada": the detector's resize and scaling
                       (`inception.preprocess`).
  num_samples          generated images (0: as many as real images are compared).
  batch_size           images generated per call (one compilation for all calls).
  classifier_steps, classifier_batch_size, classifier_lr, classifier_widths, classifier_embed_dim,
  classifier_examples  the classifier's training: Adam steps, minibatch, learning rate, conv widths, feature width,
                       and how many train images it sees (0: all).
  cache_dir            where trained classifiers are kept ("": $JAXGEN_CACHE, else ~/.cache/jaxgen).

The classifier cache is keyed by the dataset (name, size, image shape and a hash of its first images, so a test's
mock data never stands in for the real thing) and by every classifier setting; delete the folder to retrain.
FIDs from the classifier compare models evaluated with the same classifier; they are not comparable with the
Inception FIDs in papers.

The real images are the first `num_examples` (0: all) of the evaluated split, binarized like the model's data
when `config.binarize` is set (then 0/1 images on both sides are scaled to 0/255 before feature extraction).
"""
import hashlib
import json
import logging
import os
import time

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from jaxgen import data
from jaxgen.metrics import classifier
from jaxgen.metrics import fid
from jaxgen.metrics import inception
from jaxgen.metrics import prdc

logger = logging.getLogger("jaxgen")

DEFAULTS = dict(extractor="classifier", inception_path="", inception_resize="pytorch_fid", num_samples=0,
                batch_size=250, classifier_steps=2000,
                classifier_batch_size=64, classifier_lr=1e-3, classifier_widths=(16, 32, 64),
                classifier_embed_dim=128, classifier_examples=0, cache_dir="")
_CACHE_VERSION = 1  # bump when the classifier or its training changes


def settings(config):
  """config.sample_metrics merged over DEFAULTS; unknown keys and bad values are errors that name the fix."""
  given = dict(config.get("sample_metrics", None) or {})
  unknown = sorted(set(given) - set(DEFAULTS))
  if unknown:
    raise ValueError(f"Unknown config.sample_metrics key(s) {unknown}; known keys: {sorted(DEFAULTS)}.")
  out = DEFAULTS | given
  out["classifier_widths"] = tuple(int(w) for w in out["classifier_widths"])
  if out["extractor"] not in ("classifier", "inception"):
    raise ValueError(f"config.sample_metrics.extractor={out['extractor']!r}: use 'classifier' (offline, trained on "
                     f"the dataset) or 'inception' (with config.sample_metrics.inception_path).")
  if out["inception_resize"] not in inception.RESIZES:
    raise ValueError(f"config.sample_metrics.inception_resize={out['inception_resize']!r}: use one of "
                     f"{inception.RESIZES} (pytorch-fid's front end, or StyleGAN2-ADA's detector's).")
  if out["extractor"] == "inception" and not out["inception_path"]:
    raise ValueError("config.sample_metrics.extractor='inception' needs config.sample_metrics.inception_path=FILE.npz "
                     "(convert the public FID weights as the jaxgen.metrics.inception docstring shows).")
  if out["extractor"] == "inception" and not os.path.exists(out["inception_path"]):
    raise FileNotFoundError(f"config.sample_metrics.inception_path={out['inception_path']!r} does not exist; "
                            f"convert the public FID weights as the jaxgen.metrics.inception docstring shows.")
  return out


def cache_dir(opts):
  return opts["cache_dir"] or os.environ.get("JAXGEN_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                                             "jaxgen")


def _classifier_key(dataset, opts, seed):
  """A hash of everything the trained classifier depends on: data identity and training settings."""
  head = dataset.get(np.arange(min(256, dataset.num_examples)))
  ident = {"version": _CACHE_VERSION, "dataset": dataset.name, "num_examples": dataset.num_examples,
           "image_shape": list(dataset.image_shape), "num_classes": dataset.num_classes, "seed": seed,
           **{k: list(v) if isinstance(v, tuple) else v for k, v in opts.items() if k.startswith("classifier_")}}
  h = hashlib.sha256(json.dumps(ident, sort_keys=True).encode())
  h.update(np.ascontiguousarray(head["image"]).tobytes())
  h.update(np.ascontiguousarray(head["label"]).astype(np.int64).tobytes())
  return h.hexdigest()[:16]


def trained_classifier(dataset_name, data_dir, opts, seed=0):
  """(model, params) of the offline classifier for `dataset_name`, from the cache or trained now (and cached)."""
  train = data.load(dataset_name, "train", data_dir)
  if train.num_classes < 2:
    raise ValueError(f"The offline feature extractor is a classifier and {dataset_name!r} has no class labels; use "
                     f"config.sample_metrics.extractor='inception' with inception_path.")
  model = classifier.Classifier(num_classes=train.num_classes, widths=opts["classifier_widths"],
                                embed_dim=opts["classifier_embed_dim"])
  path = os.path.join(cache_dir(opts), "classifiers", f"{dataset_name}-{_classifier_key(train, opts, seed)}.msgpack")
  if os.path.exists(path):
    with open(path, "rb") as f:
      return model, flax.serialization.msgpack_restore(f.read())
  n = opts["classifier_examples"] or train.num_examples
  n = min(n, train.num_examples)
  t0 = time.perf_counter()
  batch = train.get(np.arange(n))
  logger.info("Training the offline feature classifier on %d %s images (%d steps; cached in %s) ...", n,
              dataset_name, opts["classifier_steps"], path)
  params, loss = classifier.train(jax.random.key(seed), batch["image"], batch["label"], model=model,
                                  steps=opts["classifier_steps"], batch_size=opts["classifier_batch_size"],
                                  lr=opts["classifier_lr"])
  params = jax.device_get(params)
  logger.info("Offline classifier trained in %.0f s (final minibatch loss %.3f).", time.perf_counter() - t0,
              float(loss))
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f"{path}.{os.getpid()}.tmp"
  with open(tmp, "wb") as f:
    f.write(flax.serialization.msgpack_serialize(params))
  os.replace(tmp, path)  # atomic: concurrent evaluations never read half a file
  return model, params


def feature_extractor(config, opts=None):
  """images uint8 [N, H, W, C] -> features [N, D] (numpy float64), as config.sample_metrics asks."""
  opts = opts or settings(config)
  if opts["extractor"] == "inception":
    variables = inception.load_variables(opts["inception_path"])
    return lambda images: inception.pool3_features(variables, images, resize=opts["inception_resize"])
  model, params = trained_classifier(config.dataset, config.data_dir, opts, seed=config.seed)
  return lambda images: classifier.embed(params, images, model=model)


def compare(real_features, gen_features):
  """{fid, kid, kid_std, precision, recall} of two feature sets [N, D]."""
  kid, kid_std = fid.kernel_inception_distance(real_features, gen_features)
  precision, recall = prdc.precision_recall(real_features, gen_features)
  return {"fid": fid.fid_from_features(real_features, gen_features), "kid": kid, "kid_std": kid_std,
          "precision": precision, "recall": recall}


def generated_images(s, state, num, batch_size, seed):
  """uint8 [num, H, W, C] from the trainer's sampler `s.sample` in equal chunks (one compilation)."""
  classes = max(s.train_data.num_classes, 1)
  out = []
  for i, start in enumerate(range(0, num, batch_size)):
    labels = (jnp.arange(start, start + batch_size) % classes).astype(jnp.int32)
    out.append(np.asarray(jax.device_get(s.sample(state, jax.random.fold_in(jax.random.key(seed), i), labels))))
  return np.concatenate(out)[:num]


def evaluate(s, state, split, num_examples=0):
  """FID / KID / precision / recall of the model's samples (`s.sample`, the trainer's sampler) against the first
  num_examples (0 or None: all) images of `split`, binarized like the model's data.

  Works for every family: `s` is the trainer's Setup, `state` a train state. Returns a dict of floats. The
  evaluator of `experiments.evaluate --evals=sample_quality`; the settings are config.sample_metrics.
  """
  config = s.config
  opts = settings(config)
  extract = feature_extractor(config, opts)
  real = s.input.examples(split, num_examples)
  num = opts["num_samples"] or len(real)
  gen = generated_images(s, state, num, min(opts["batch_size"], num), config.seed + 3)
  if config.binarize:  # 0/1 images: show the extractor 0/255, as the classifier saw 8-bit digits
    real, gen = real * 255, np.where(gen > 0, 255, 0).astype(np.uint8)
  results = compare(extract(real), extract(gen))
  return results | {"num_real": int(len(real)), "num_samples": int(num)}
