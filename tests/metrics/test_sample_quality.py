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


def _config(cache_dir, binarize="", **metrics):
  config = ml_collections.ConfigDict(dict(dataset="digits", data_dir=None, seed=0, binarize=binarize, batch_size=50,
                                          eval_batch_size=0, model_name="vae.nvae", sample_temperature=0.6))
  config.sample_metrics = TINY | {"cache_dir": str(cache_dir)} | metrics
  return config


def _setup(config, sampler, sample_images=None):
  """The parts of trainer.Setup that sample_quality.evaluate uses (`sample_images`: the family's)."""
  inputs = data.Input(config)
  return types.SimpleNamespace(config=config, input=inputs, train_data=inputs.train, sample=sampler, model=None,
                               family=types.SimpleNamespace(sample_images=sample_images))


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


def test_binarized_data_compare_0_1_samples_and_decoder_means_compare_with_8bit_training_images(tmp_path):
  config = _config(tmp_path, binarize="dynamic", num_samples=100, batch_size=100)
  setup = _setup(config, None)
  binary = setup.input.examples("test", 100)  # binarized as the model's data
  same = sample_quality.evaluate(_setup(config, lambda state, rng, labels: jnp.asarray(binary)), None, "test", 100)
  assert same["fid"] == pytest.approx(0.0, abs=1e-6) and same["precision"] == 1.0
  grey = data.load("digits", "train").get(np.arange(100))["image"]  # 8-bit, as NVAE's FID statistics
  with pytest.raises(ValueError, match="0/1 images"):  # grey means are not thresholded into white digits
    sample_quality.evaluate(_setup(config, lambda state, rng, labels: jnp.asarray(grey)), None, "test", 100)
  # The NVAE protocol's mechanics: the family's sample_images with config overrides (decoder means at latent
  # temperature 1) against the 8-bit training images.
  seen = []

  def sample_images(state, rng, labels, *, model, config):
    seen.append((config.decoder_means, config.sample_temperature, config.readjust_bn_batch))
    return jnp.asarray(grey)

  config.sample_metrics.update(real_split="train", real_examples=100,
                               sampler=dict(decoder_means=True, sample_temperature=1.0, readjust_bn_batch=2))
  means = sample_quality.evaluate(_setup(config, None, sample_images), None, "test", 100)
  assert seen == [(True, 1.0, 2)] and means["num_real"] == 100
  assert means["fid"] == pytest.approx(0.0, abs=1e-6) and means["precision"] == 1.0


def test_protocols_fix_the_official_settings_and_reject_contradicting_keys(tmp_path):
  opts = sample_quality.settings(_config(tmp_path, protocol="nvae", extractor="inception",
                                         inception_path=__file__, batch_size=100))
  assert (opts["num_samples"], opts["real_split"], opts["real_examples"], opts["inception_detector"]) == (
      50_000, "train", 50_000, "pytorch-fid")
  assert opts["sampler"] == dict(decoder_means=True, sample_temperature=1.0, readjust_bn_iterations=500,
                                 readjust_bn_batch=2, readjust_bn_temperature=0.6)  # BN at --temp, as official
  assert opts["batch_size"] == 100  # keys the protocol leaves open stay settable
  ada = sample_quality.protocol_settings("stylegan2-ada", _config(tmp_path))
  assert (ada["num_samples"], ada["real_split"], ada["real_examples"], ada["inception_detector"]) == (
      50_000, "train", 0, "stylegan2-ada")
  with pytest.raises(ValueError, match="fixes num_samples"):
    sample_quality.settings(_config(tmp_path, protocol="nvae", num_samples=10))
  glow = _config(tmp_path, protocol="nvae")
  glow.model_name = "flows.glow"
  with pytest.raises(ValueError, match="protocol='nvae' samples NVAE"):
    sample_quality.settings(glow)
  with pytest.raises(ValueError, match="protocol='fid50k'"):
    sample_quality.settings(_config(tmp_path, protocol="fid50k"))
