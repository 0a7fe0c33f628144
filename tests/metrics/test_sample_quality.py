"""Sample-quality evaluation for any family (jaxgen.metrics.sample_quality): the cached offline classifier, and
FID / KID / precision / recall of a sampler against a split, on a stand-in for the trainer's Setup."""
import os
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxgen import data
from jaxgen.metrics import classifier
from jaxgen.metrics import sample_quality

TINY = dict(batch_size=50, classifier_steps=3, classifier_examples=64, classifier_widths=(4,),
            classifier_embed_dim=8)


def _config(cache_dir, **metrics):
  config = ml_collections.ConfigDict(dict(dataset="digits", data_dir=None, seed=0, binarize="", batch_size=50,
                                          eval_batch_size=0))
  config.sample_metrics = TINY | {"cache_dir": str(cache_dir)} | metrics
  return config


def _setup(config, sampler):
  """The parts of trainer.Setup that sample_quality.evaluate uses."""
  inputs = data.Input(config)
  return types.SimpleNamespace(config=config, input=inputs, train_data=inputs.train, sample=sampler)


def test_samples_equal_to_the_real_images_score_perfectly_and_noise_scores_badly(tmp_path):
  config = _config(tmp_path, num_samples=100)
  real = data.load("digits", "test").get(np.arange(100))["image"]
  calls = []

  def copy_sampler(state, rng, labels):  # "generates" the real images, in the order asked for
    del state, rng
    calls.append(labels.shape[0])
    start = sum(calls[:-1])
    return jnp.asarray(real[start: start + labels.shape[0]])

  same = sample_quality.evaluate(_setup(config, copy_sampler), None, "test", 100)
  assert calls == [50, 50]  # equal chunks: one compilation of a real sampler
  assert same["num_real"] == 100 and same["num_samples"] == 100
  assert same["fid"] == pytest.approx(0.0, abs=1e-6) and same["precision"] == 1.0 and same["recall"] == 1.0
  noise = lambda state, rng, labels: jax.random.randint(rng, (labels.shape[0], 28, 28, 1), 0, 256).astype(jnp.uint8)
  bad = sample_quality.evaluate(_setup(config, noise), None, "test", 100)
  assert bad["fid"] > 0.01 and bad["kid"] > same["kid"] and bad["precision"] < 0.5


def test_offline_classifier_is_cached_by_dataset_and_settings(tmp_path, monkeypatch):
  opts = sample_quality.settings(_config(tmp_path))
  model, params = sample_quality.trained_classifier("digits", None, opts)
  files = os.listdir(tmp_path / "classifiers")
  assert len(files) == 1 and files[0].startswith("digits-")
  trained = []
  monkeypatch.setattr(classifier, "train", lambda *a, **k: trained.append(1) or (params, 0.0))
  _, cached = sample_quality.trained_classifier("digits", None, opts)  # from the file: no training
  assert not trained
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(params), cached)
  images = data.load("digits", "test").get(np.arange(8))["image"]
  np.testing.assert_array_equal(classifier.embed(params, images, model=model),
                                classifier.embed(cached, images, model=model))
  sample_quality.trained_classifier("digits", None, opts | {"classifier_steps": 4})  # other settings: retrained
  assert trained and len(os.listdir(tmp_path / "classifiers")) == 2


def test_settings_reject_unknown_keys_and_missing_inception_weights(tmp_path):
  with pytest.raises(ValueError, match="Unknown config.sample_metrics"):
    sample_quality.settings(_config(tmp_path, samples=3))
  with pytest.raises(ValueError, match="inception_path"):
    sample_quality.settings(_config(tmp_path, extractor="inception"))
  with pytest.raises(FileNotFoundError, match="does not exist"):
    sample_quality.settings(_config(tmp_path, extractor="inception", inception_path=str(tmp_path / "no.npz")))
