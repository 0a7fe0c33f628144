"""The paper configs train and measure as the official code does (config values only: nothing is compiled)."""
import math

import numpy as np
import pytest

from experiments.configs import glow_cifar10
from experiments.configs import lmconv_cifar10
from experiments.configs import lmconv_mnist_binarized
from experiments.configs import nvae_cifar10
from experiments.configs import nvae_mnist
from experiments.configs import stylegan2_cifar10
from jaxgen.metrics import sample_quality


def test_glow_cifar10_is_openais_adamax_with_beta2_from_the_epoch_length_and_evaluates_raw_weights():
  config = glow_cifar10.get_config()
  iterations_per_epoch = math.ceil(50_000 / config.batch_size)  # openai/glow train.py get_its
  assert config.optimizer["name"] == "adamax"
  assert config.optimizer["b2"] == pytest.approx(1 - 1 / iterations_per_epoch)
  assert config.optimizer["sqrt_b2_correction"]  # openai's step size alpha sqrt(1 - beta2^t) / (1 - beta1^t)
  assert config.ema_decay == 0.0  # openai never swaps in its Polyak average for evaluation


@pytest.mark.parametrize("module", [lmconv_cifar10, lmconv_mnist_binarized])
def test_lmconv_clip_and_eps_are_the_official_ones_on_the_summed_loss_scale(module):
  config = module.get_config()
  # jaxgen's loss: mean nats per dimension; the official: the batch's summed nats (-c 2e6, torch Adam eps 1e-8).
  scale = config.batch_size * np.prod(config.model["image_shape"])
  assert config.optimizer["grad_clip_norm"] * scale == pytest.approx(2e6)
  assert config.optimizer["eps"] * scale == pytest.approx(1e-8)


@pytest.mark.parametrize("module, protocol", [(nvae_cifar10, "nvae"), (nvae_mnist, "nvae"),
                                              (stylegan2_cifar10, "stylegan2-ada")])
def test_paper_configs_measure_samples_with_the_official_protocol(module, protocol):
  config = module.get_config()
  assert config.sample_metrics["protocol"] == protocol
  fixed = sample_quality.protocol_settings(protocol, config)
  assert fixed["num_samples"] == 50_000 and fixed["real_split"] == "train"
  with pytest.raises(ValueError, match="inception"):  # the official detectors need their converted weights
    sample_quality.settings(config)
