"""Sample-quality metrics for any family: FID, KID and precision/recall of a model's samples against real images.

Features come from one of two extractors, chosen by `config.sample_metrics` (a dict; every key optional):

  extractor            "classifier" (default): the offline classifier of `jaxgen.metrics.classifier`, trained by
                       jaxgen on the dataset's own train split the first time it is needed and cached on disk;
                       "inception": Inception-v3 pool3 (`jaxgen.metrics.inception`) with weights from
                       `inception_path`, the numbers the literature reports.
  inception_path       an .npz written as the `jaxgen.metrics.inception` docstring shows (converted public weights).
  inception_detector   "pytorch-fid" (default: its weights and bilinear resize; NVAE's FID) or "stylegan2-ada"
                       (the same 2015-12-05 weights behind StyleGAN2-ADA's TF-compatible resize and (x - 128) / 128
                       scaling, `inception.preprocess`; `DETECTORS`).
  protocol             "" (default: the settings here), or an official protocol that fixes the settings it names
                       (`protocol_settings`): "nvae" (NVlabs/NVAE evaluate.py --eval_mode=evaluate_fid) or
                       "stylegan2-ada" (stylegan2-ada-pytorch fid50k_full). A given key that contradicts it is an error.
  num_samples          generated images (0: as many as real images are compared).
  real_split, real_examples  the real images: "" for the evaluated split and count (the trainer's eval split, or
                       `experiments.evaluate`'s), else this split's first real_examples (0: all).
  sampler              config keys overridden while sampling, for the family's `sample_images` (NVAE reads
                       decoder_means, sample_temperature, readjust_bn_{iterations,batch,temperature}).
  batch_size           images generated per call (one compilation for all calls).
  classifier_steps, classifier_batch_size, classifier_lr, classifier_widths, classifier_embed_dim,
  classifier_examples  the classifier's training: Adam steps, minibatch, learning rate, conv widths, feature width,
                       and how many train images it sees (0: all).
  cache_dir            where trained classifiers are kept ("": $JAXGEN_CACHE, else ~/.cache/jaxgen).

The classifier cache is keyed by the dataset (name, size, image shape and a hash of its first images, so a test's
mock data never stands in for the real thing) and by every classifier setting; delete the folder to retrain.
FIDs from the classifier compare models evaluated with the same classifier; they are not comparable with the
Inception FIDs in papers.

For binarized data (`config.binarize`) the real images are binarized like the model's data and both sides' 0/1
images are scaled to 0/255 before feature extraction; with sampler.decoder_means (the NVAE protocol) the samples are
8-bit grey means and the real images are the 8-bit originals, as official NVAE's FID statistics.
"""
import functools
import hashlib
import json
import logging
import os
import time

import flax.serialization
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxgen import data
from jaxgen.metrics import classifier
from jaxgen.metrics import fid
from jaxgen.metrics import inception
from jaxgen.metrics import prdc

logger = logging.getLogger("jaxgen")

DEFAULTS = dict(extractor="classifier", inception_path="", inception_detector="pytorch-fid", protocol="",
                num_samples=0, real_split="", real_examples=0, sampler={}, batch_size=250, classifier_steps=2000,
                classifier_batch_size=64, classifier_lr=1e-3, classifier_widths=(16, 32, 64),
                classifier_embed_dim=128, classifier_examples=0, cache_dir="")
_CACHE_VERSION = 1  # bump when the classifier or its training changes
# inception_detector -> features(variables, uint8 images [N, H, W, C]) -> [N, 2048]. Both use the 2015-12-05
# weights (`jaxgen.convert.inception`); they differ in the front end (resize and scaling).
DETECTORS = {"pytorch-fid": functools.partial(inception.pool3_features, resize="pytorch_fid"),
             "stylegan2-ada": functools.partial(inception.pool3_features, resize="stylegan2_ada")}


def protocol_settings(name, config):
  """The sample_metrics settings an official protocol fixes ({} for "").

  nvae: NVlabs/NVAE `evaluate.py --eval_mode=evaluate_fid --readjust_bn`: BN statistics re-adjusted by 500 passes of
    2 samples at the sampling temperature (`--temp`, here config.sample_temperature), then 50k images of decoder
    means (train.py `create_generator_vae`) at latent temperature 1, pytorch-fid Inception, against the first 50k
    training images (scripts/precompute_fid_statistics.py; not binarized for MNIST).
  stylegan2-ada: `calc_metrics.py --metrics=fid50k_full`: 50k samples against the whole training set, NVIDIA's
    Inception detector (kid50k_full and pr50k3_full use the same sets here; pr50k3 officially uses VGG16).
  """
  if name == "nvae":
    if config.get("model_name") != "vae.nvae":
      raise ValueError(f"config.sample_metrics.protocol='nvae' samples NVAE's decoder means; config.model_name is "
                       f"{config.get('model_name')!r}: use protocol='' (or 'stylegan2-ada').")
    sampler = dict(decoder_means=True, sample_temperature=1.0, readjust_bn_iterations=500, readjust_bn_batch=2,
                   readjust_bn_temperature=float(config.get("sample_temperature", 1.0)))
    return dict(extractor="inception", inception_detector="pytorch-fid", num_samples=50_000, real_split="train",
                real_examples=50_000, sampler=sampler)
  if name == "stylegan2-ada":
    return dict(extractor="inception", inception_detector="stylegan2-ada", num_samples=50_000, real_split="train",
                real_examples=0)
  if name:
    raise ValueError(f"config.sample_metrics.protocol={name!r}: use '' (jaxgen's settings), 'nvae' or "
                     f"'stylegan2-ada'.")
  return {}


def settings(config):
  """config.sample_metrics merged over DEFAULTS and its protocol; unknown keys and bad values are errors that name
  the fix."""
  given = dict(config.get("sample_metrics", None) or {})
  unknown = sorted(set(given) - set(DEFAULTS))
  if unknown:
    raise ValueError(f"Unknown config.sample_metrics key(s) {unknown}; known keys: {sorted(DEFAULTS)}.")
  fixed = protocol_settings(given.get("protocol", ""), config)
  for key, value in fixed.items():
    if key in given and _plain(given[key]) != value:
      raise ValueError(f"config.sample_metrics.protocol={given['protocol']!r} fixes {key}={value!r}; drop "
                       f"config.sample_metrics.{key} or set protocol=''.")
  out = DEFAULTS | given | fixed
  out["sampler"] = _plain(out["sampler"])
  out["classifier_widths"] = tuple(int(w) for w in out["classifier_widths"])
  if out["inception_detector"] not in DETECTORS:
    raise ValueError(f"config.sample_metrics.inception_detector={out['inception_detector']!r}: use one of "
                     f"{list(DETECTORS)}.")
  if out["extractor"] not in ("classifier", "inception"):
    raise ValueError(f"config.sample_metrics.extractor={out['extractor']!r}: use 'classifier' (offline, trained on "
                     f"the dataset) or 'inception' (with config.sample_metrics.inception_path).")
  if out["extractor"] == "inception" and not out["inception_path"]:
    raise ValueError("config.sample_metrics.extractor='inception' needs config.sample_metrics.inception_path=FILE.npz "
                     "(convert the public FID weights as the jaxgen.metrics.inception docstring shows).")
  if out["extractor"] == "inception" and not os.path.exists(out["inception_path"]):
    raise FileNotFoundError(f"config.sample_metrics.inception_path={out['inception_path']!r} does not exist; "
                            f"convert the public FID weights as the jaxgen.metrics.inception docstring shows.")
  return out


def _plain(value):
  """ConfigDicts (and dicts of them) as plain dicts, so settings compare and hash as values."""
  return {k: _plain(v) for k, v in value.items()} if isinstance(value, (dict, ml_collections.ConfigDict)) else value


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
    return functools.partial(DETECTORS[opts["inception_detector"]], variables)
  model, params = trained_classifier(config.dataset, config.data_dir, opts, seed=config.seed)
  return lambda images: classifier.embed(params, images, model=model)


def compare(real_features, gen_features):
  """{fid, kid, kid_std, precision, recall} of two feature sets [N, D]."""
  kid, kid_std = fid.kernel_inception_distance(real_features, gen_features)
  precision, recall = prdc.precision_recall(real_features, gen_features)
  return {"fid": fid.fid_from_features(real_features, gen_features), "kid": kid, "kid_std": kid_std,
          "precision": precision, "recall": recall}


def sampler(s, overrides):
  """The trainer's sampler `s.sample`, or with `overrides` (config keys) the family's `sample_images` compiled with
  a config that has them."""
  if not overrides:
    return s.sample
  config = s.config.copy_and_resolve_references()
  with config.unlocked():
    config.update(overrides)
  return jax.jit(functools.partial(s.family.sample_images, model=s.model, config=config))


def generated_images(sample, num_classes, num, batch_size, seed):
  """uint8 [num, H, W, C] from `sample(state, rng, labels)` in equal chunks (one compilation); `sample` is bound to a
  train state. Labels cycle over the num_classes classes (0 for unconditional data)."""
  classes = max(num_classes, 1)
  out = []
  for i, start in enumerate(range(0, num, batch_size)):
    labels = (jnp.arange(start, start + batch_size) % classes).astype(jnp.int32)
    out.append(np.asarray(jax.device_get(sample(jax.random.fold_in(jax.random.key(seed), i), labels))))
  return np.concatenate(out)[:num]


def real_images(s, split, num_examples, opts):
  """uint8 [N, H, W, C]: the real images the samples are compared with (see the module docstring)."""
  split, num_examples = (opts["real_split"], opts["real_examples"]) if opts["real_split"] else (split, num_examples)
  if s.config.binarize and opts["sampler"].get("decoder_means", False):  # 8-bit originals, not binarized
    dataset = s.input.split(split)
    return dataset.get(np.arange(min(num_examples or dataset.num_examples, dataset.num_examples)))["image"]
  return s.input.examples(split, num_examples)


def evaluate(s, state, split, num_examples=0):
  """FID / KID / precision / recall of the model's samples against real images: by default the first num_examples
  (0 or None: all) images of `split`, binarized like the model's data; config.sample_metrics can name others and
  an official protocol (module docstring).

  Works for every family: `s` is the trainer's Setup, `state` a train state. Returns a dict of floats. The
  evaluator of `experiments.evaluate --evals=sample_quality`; the settings are config.sample_metrics.
  """
  config = s.config
  opts = settings(config)
  extract = feature_extractor(config, opts)
  real = real_images(s, split, num_examples, opts)
  num = opts["num_samples"] or len(real)
  sample = functools.partial(sampler(s, opts["sampler"]), state)
  gen = generated_images(sample, s.train_data.num_classes, num, min(opts["batch_size"], num), config.seed + 3)
  if config.binarize and not opts["sampler"].get("decoder_means", False):
    if gen.max() > 1:
      raise ValueError(f"{config.get('model_name')}'s sample_images returned values up to {gen.max()} for "
                       f"binarized data; the family contract asks for 0/1 images.")
    real, gen = real * np.uint8(255), gen * np.uint8(255)  # 0/1 images: shown as 0/255, as the classifier saw digits
  results = compare(extract(real), extract(gen))
  return results | {"num_real": int(len(real)), "num_samples": int(num)}
