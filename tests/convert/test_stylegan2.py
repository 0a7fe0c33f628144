"""jaxgen.convert.stylegan2 against NVlabs/stylegan2-ada-pytorch run on CPU (tests/reference/stylegan2/make_fixture.py):
two small models with perturbed weights, converted and written as a run the way `experiments.convert` does, restored
the way `experiments.evaluate` does, then mapping, truncation, images with constant noise (G_ema and G) and
discriminator logits compared with the official outputs at rtol = atol = 1e-5. Measured (float32, both models): max
abs diff 9.5e-7 on ws (|ws| <= 4.5), 2.9e-6 on images (|img| <= 6.5), 4.8e-7 on logits; relative to each element
above 1e-3: 1.7e-5 on ws, 3.4e-6 on logits, 2.5e-4 on images (near-zero pixels after cancellation)."""
import jax
import numpy as np
import pytest

from jaxgen import convert
from jaxgen import data
from jaxgen.convert import stylegan2
from jaxgen.gan import networks
from jaxgen.training import trainer
from tests.convert import conftest

ATOL, RTOL = 1e-5, 1e-5


def official(name):
  """What `stylegan2.read` returns for REF/NAME.pkl, from the arrays and settings the fixture script saved beside it
  (tests/convert/test_stylegan2_read.py checks that `read` gives exactly these)."""
  settings = conftest.load_json(conftest.reference("stylegan2", f"{name}.json"))
  arrays = conftest.load_npz(conftest.reference("stylegan2", f"{name}.npz"))
  out = {"training_set_kwargs": settings["training_set_kwargs"]}
  for key in ("G", "D", "G_ema"):
    out[key] = {"init_kwargs": settings[key],
                "state_dict": {k.split("/", 1)[1]: v for k, v in arrays.items() if k.split("/")[0] == key}}
  return out


@pytest.fixture(scope="module", params=["uncond", "cond"])
def restored(request, tmp_path_factory):
  """(name, model, restored state, official outputs): convert + write_run, then trainer.restore_for_eval."""
  name = request.param
  config, variables = stylegan2.convert(official(name))
  workdir = str(tmp_path_factory.mktemp(name))
  # No datasets in tests, and TFDS's mock data has no 1-channel cifar10 or folder:DIR; the splits are only opened.
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(data, "load", lambda *a, **k: data.synthetic(tuple(config.model.image_shape),
                                                            num_classes=config.model.num_classes or 10))
    convert.write_run(config, variables, workdir)
    s, state = trainer.restore_for_eval(conftest.config_from_workdir(workdir), workdir)
  return name, s.model, state, conftest.load_npz(conftest.reference("stylegan2", f"{name}_out.npz"))


@pytest.fixture(scope="module")
def outputs(restored):
  """(name, jaxgen's outputs, the official ones) for the fixture's inputs: one compilation per network."""
  name, model, state, out = restored
  gen = networks.Generator(model)
  labels = out["labels"] if model.num_classes else None
  mapping = jax.jit(lambda p, z, c: gen.apply({"params": p}, z, c, method="mapping"))
  synthesis = jax.jit(lambda p, nc, ws: gen.apply(networks.g_variables(p, nc), ws, "const", method="synthesis"))
  disc = jax.jit(lambda p, x, c: networks.Discriminator(model).apply({"params": p}, x, c))
  ws = networks.broadcast_ws(mapping(state["ema_params"], out["z"], labels), model.num_ws)
  ws_psi07 = networks.truncate(ws, state["w_avg"], 0.7)
  g_ws = networks.broadcast_ws(mapping(state["params"]["generator"], out["z"], labels), model.num_ws)
  d_params, noise_const = state["params"]["discriminator"], state["noise_const"]
  got = dict(
      ws=ws, ws_psi07=ws_psi07, ws_psi05_cutoff2=networks.truncate(ws, state["w_avg"], 0.5, cutoff=2),
      img_ema_psi07=synthesis(state["ema_params"], noise_const, ws_psi07),
      img_g=synthesis(state["params"]["generator"], noise_const, g_ws),
      d_logits=disc(d_params, out["d_input"], labels),
      d_logits_fake=disc(d_params, synthesis(state["ema_params"], noise_const, ws), labels),
      img_drawn_noise=synthesis(state["ema_params"], None, ws_psi07))
  return name, jax.device_get(got), out


def _check(outputs, keys):
  _, got, want = outputs
  for key in keys:
    np.testing.assert_allclose(got[key], want[key], rtol=RTOL, atol=ATOL, err_msg=key)


def test_mapping_and_truncation_match_the_official_code(outputs):
  _check(outputs, ("ws", "ws_psi07", "ws_psi05_cutoff2"))


def test_images_with_constant_noise_match_the_official_code(outputs):
  """G_ema at psi 0.7 and G at psi 1, noise_mode='const': the pickle's noise_const buffers, conv0 flipped."""
  _check(outputs, ("img_ema_psi07", "img_g"))
  _, got, want = outputs  # the buffers matter: the noise init draws gives other images
  assert np.max(np.abs(got["img_drawn_noise"] - want["img_ema_psi07"])) > 1e-2


def test_discriminator_logits_match_the_official_code(outputs):
  _check(outputs, ("d_logits", "d_logits_fake"))


def test_config_comes_from_init_kwargs():
  config, _ = stylegan2.convert(official("cond"), {"data_dir": "/data"})
  m = config.model
  assert (config.dataset, config.data_dir, config.model_name) == ("cifar10", "/data", "gan.stylegan2")
  assert (tuple(m["image_shape"]), m["num_classes"], m["z_dim"], m["w_dim"]) == ((32, 32, 1), 4, 12, 16)
  assert (m["mapping_layers"], m["mapping_lr_multiplier"], m["d_mapping_layers"], m["d_mapping_lr_multiplier"]) == (
      2, 0.01, 1, 0.1)
  assert (m["conv_clamp"], m["cmap_dim"], m["d_architecture"], m["mbstd_group_size"], m["mbstd_num_channels"]) == (
      0.5, 8, "orig", 4, 2)
  assert (m["channel_base"], m["channel_max"], m["r1_gamma"], m["pl_weight"]) == (256, 8, 0.01, 0.0)  # cifar recipe
  config, _ = stylegan2.convert(official("uncond"))
  assert config.dataset == "folder:tiny16" and not config.optimizer
  assert networks.Model(**config.model).r1_gamma == 10.0  # jaxgen's default recipe (the official `stylegan2`)


@pytest.mark.parametrize("key, where, value, message", [
    ("architecture", "G.synthesis_kwargs", "resnet", "synthesis_kwargs.architecture='resnet'"),
    ("conv_clamp", "D", 256, "uses one conv_clamp"),
    ("layer_features", "G.mapping_kwargs", 32, "mapping layers are all 16 wide"),
    ("architecture", "D", "skip", "'resnet' or 'orig'"),
    ("fancy_option", "D.epilogue_kwargs", 1, "no counterpart"),
])
def test_architectures_jaxgen_cannot_express_are_named(key, where, value, message):
  off = official("cond")
  node = off["G_ema"]["init_kwargs"] if where.startswith("G") else off["D"]["init_kwargs"]
  for part in where.split(".")[1:]:
    node = node.setdefault(part, {})
  node[key] = value
  off["G"]["init_kwargs"] = off["G_ema"]["init_kwargs"]
  with pytest.raises(convert.ConversionError, match=message.replace("(", r"\(")):
    stylegan2.convert(off)


def test_a_state_dict_entry_without_a_place_is_an_error():
  off = official("uncond")
  off["D"]["state_dict"]["b4.extra.weight"] = np.zeros(3, np.float32)
  with pytest.raises(convert.ConversionError, match="b4.extra.weight"):
    stylegan2.convert(off)


def test_init_kwargs_of_a_tf_converted_pickle():
  """ffhq.pkl-like settings as the official legacy.py writes them: every key spelt out, D mapping 0 layers with lr
  multiplier 0.1, minibatch-stddev over the whole batch."""
  lrelu = dict(activation="lrelu")
  g = dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=1024, img_channels=3,
           mapping_kwargs=dict(num_layers=8, embed_features=None, layer_features=None, lr_multiplier=0.01,
                               w_avg_beta=0.995, **lrelu),
           synthesis_kwargs=dict(channel_base=32768, channel_max=512, num_fp16_res=0, conv_clamp=None,
                                 architecture="skip", resample_filter=[1, 3, 3, 1], use_noise=True, **lrelu))
  d = dict(c_dim=0, img_resolution=1024, img_channels=3, architecture="resnet", channel_base=32768, channel_max=512,
           num_fp16_res=0, conv_clamp=None, cmap_dim=None,
           block_kwargs=dict(resample_filter=[1, 3, 3, 1], freeze_layers=0, **lrelu),
           mapping_kwargs=dict(num_layers=0, embed_features=None, layer_features=None, lr_multiplier=0.1, **lrelu),
           epilogue_kwargs=dict(mbstd_group_size=None, mbstd_num_channels=1, **lrelu))
  m = networks.Model(**stylegan2.model_config(g, d))
  assert (m.resolution, m.mapping_layers, m.d_mapping_layers, m.d_mapping_lr_multiplier) == (1024, 8, 0, 0.1)
  assert m.mbstd_group_size is None and m.num_ws == 18
