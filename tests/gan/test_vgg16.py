"""The projector's official distance, VGG16 LPIPS (jaxgen.metrics.vgg16): equal to the lpips package's
LPIPS(net='vgg') on seeded random weights (tests/reference/vgg16, written by its make_fixture.py with torch), the
converter from torchvision / lpips state dicts, the projector's front end, and --distance=vgg16 in
`project_image` and experiments.project."""
import functools
import importlib.util
import os
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import stylegan2_quickstart
from jaxgen import convert
from jaxgen.convert import vgg16 as convert_vgg16
from jaxgen.gan import networks
from jaxgen.gan import stylegan2 as sg
from jaxgen.metrics import vgg16
from jaxgen.training import checkpoints
from tests.gan.conftest import init

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REFERENCE = os.path.join(REPO, "tests", "reference", "vgg16")


@functools.cache
def fixture_script():
  spec = importlib.util.spec_from_file_location("vgg16_make_fixture", os.path.join(REFERENCE, "make_fixture.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@functools.cache
def official_state_dicts():
  """(torchvision-layout VGG16 `features.*`, lpips vgg.pth-layout lin weights): the fixture's seeded numpy weights."""
  script = fixture_script()
  return script.random_state_dict(script.vgg16_shapes()), script.random_state_dict(script.lin_shapes())


@pytest.fixture(scope="module")
def weights_npz(tmp_path_factory):
  """The converted npz of the fixture's weights (with lin) and one without lin weights."""
  root = tmp_path_factory.mktemp("vgg16")
  sd, lin = official_state_dicts()
  paths = {"lin": str(root / "lpips.npz"), "equal": str(root / "equal.npz")}
  np.savez(paths["lin"], **convert_vgg16.convert({"state_dict": sd, "lin": lin})[1])
  np.savez(paths["equal"], **convert_vgg16.convert({"state_dict": sd, "lin": None})[1])
  return paths


@pytest.mark.parametrize("conv_impl", ["native", "matmul"])
def test_lpips_equals_the_lpips_package(weights_npz, conv_impl):
  ref = dict(np.load(os.path.join(REFERENCE, "official.npz")))
  variables = vgg16.load_variables(weights_npz["lin"])
  x = jnp.asarray(fixture_script().images())  # [2, 32, 32, 3] in [-1, 1]
  per_layer = jax.jit(functools.partial(vgg16.layer_distances, conv_impl=conv_impl))(variables, x[:1], x[1:])[0]
  # Measured (float32 here, float64 torch): max rel diff 1.2e-6 per layer (native), 5e-7 (matmul); LPIPS 0.302.
  np.testing.assert_allclose(per_layer, ref["per_layer"], rtol=1e-5)
  phi = jax.jit(functools.partial(vgg16.lpips_features, conv_impl=conv_impl))(variables, x)
  assert phi.shape == (2, 32 * 32 * 64 + 16 * 16 * 128 + 8 * 8 * 256 + 4 * 4 * 512 + 2 * 2 * 512)
  np.testing.assert_allclose(jnp.sum(jnp.square(phi[0] - phi[1])), ref["distance"][0], rtol=1e-5)
  # The trunk alone (after the ScalingLayer): each tap's spatial mean, values up to 5; measured max diff 1.2e-6.
  scaled = (x - jnp.asarray(vgg16.SHIFT)) / jnp.asarray(vgg16.SCALE)
  taps = jax.jit(vgg16.VGG16(conv_impl).apply)({"params": variables["params"]["vgg16"]}, scaled)
  for name, tap in zip(vgg16.TAPS, taps):
    np.testing.assert_allclose(jnp.mean(tap, axis=(1, 2)), ref[f"tap_means/{name}"], rtol=1e-5, atol=1e-5,
                               err_msg=name)
  # Without lin weights every channel weighs 1: lpips's lpips=False baseline (0.563 vs 0.302 calibrated).
  equal = vgg16.load_variables(weights_npz["equal"])
  np.testing.assert_allclose(jnp.sum(vgg16.layer_distances(equal, x[:1], x[1:], conv_impl)), ref["distance_equal"],
                             rtol=1e-5)


def test_projector_front_end():
  ref = dict(np.load(os.path.join(REFERENCE, "official.npz")))
  area = vgg16.area_resize(jnp.asarray(fixture_script().area_input()).transpose(0, 2, 3, 1), (7, 9))
  np.testing.assert_allclose(area.transpose(0, 3, 1, 2), ref["area"], atol=1e-6)  # torch's mode="area", 19x23 -> 7x9
  gray = jax.random.uniform(jax.random.key(0), (1, 8, 8, 1), minval=-1, maxval=1)
  up = vgg16.projector_input(gray)  # below 16x16: pixel repetition to 16x16, gray repeated to RGB
  assert up.shape == (1, 16, 16, 3)
  np.testing.assert_array_equal(up[0, ::2, ::2], jnp.repeat(gray[0], 3, axis=-1))
  np.testing.assert_array_equal(up[0, 1::2, 1::2], up[0, ::2, ::2])
  digits = jnp.zeros((1, 28, 28, 3))
  assert vgg16.projector_input(digits) is digits  # 16..256: untouched, as the official code
  big = jax.random.uniform(jax.random.key(1), (1, 512, 512, 3))
  down = vgg16.projector_input(big)  # larger: area-downsampled to 256x256 (2x2 means here)
  np.testing.assert_allclose(down, big.reshape(1, 256, 2, 256, 2, 3).mean(axis=(2, 4)), atol=1e-6)


def test_converter_round_trip_and_errors(tmp_path):
  sd, lin = official_state_dicts()
  with_classifier = {**sd, "classifier.0.weight": np.ones((4, 3), np.float32), "classifier.0.bias": np.ones(4)}
  _, flat = convert_vgg16.convert({"state_dict": with_classifier, "lin": lin})
  np.savez(tmp_path / "v.npz", **flat)
  params = vgg16.load_variables(str(tmp_path / "v.npz"))["params"]
  np.testing.assert_array_equal(params["vgg16"]["features_2"]["kernel"], sd["features.2.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(params["vgg16"]["features_28"]["bias"], sd["features.28.bias"])
  np.testing.assert_array_equal(params["lin3"], lin["lin3.model.1.weight"].reshape(-1))
  assert set(params["vgg16"]) == {f"features_{i}" for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)}
  # A whole lpips.LPIPS(net='vgg') module's state dict (trunk as net.slice{k}.{i}, lin0 and its `lins` copy).
  slices = {0: 1, 2: 1, 5: 2, 7: 2, 10: 3, 12: 3, 14: 3, 17: 4, 19: 4, 21: 4, 24: 5, 26: 5, 28: 5}
  module = {f"net.slice{slices[int(k.split('.')[1])]}.{k.split('.', 1)[1]}": v for k, v in sd.items()}
  module |= lin | {f"lins.{i}.model.1.weight": lin[f"lin{i}.model.1.weight"] for i in range(5)}
  module |= {"scaling_layer.shift": np.zeros((1, 3, 1, 1)), "scaling_layer.scale": np.ones((1, 3, 1, 1))}
  _, from_module = convert_vgg16.convert({"state_dict": module, "lin": None})
  assert sorted(from_module) == sorted(flat)
  assert all(np.array_equal(from_module[k], flat[k]) for k in flat)
  # vgg16_bn, vgg19 and a missing layer are refused before anything is written.
  bn = {**sd, "features.1.running_mean": np.zeros(64, np.float32)}
  with pytest.raises(convert.ConversionError, match="not vgg16_bn"):
    convert_vgg16.convert({"state_dict": bn})
  with pytest.raises(convert.ConversionError, match="1 unexpected"):
    convert_vgg16.convert({"state_dict": {**sd, "features.30.weight": np.zeros((512, 512, 3, 3), np.float32)}})
  with pytest.raises(convert.ConversionError, match="2 layer"):
    convert_vgg16.convert({"state_dict": {k: v for k, v in sd.items() if not k.startswith("features.0.")}})
  # The loader: a missing file, a truncated npz, a non-npz and negative lin weights, each in one line naming the fix.
  with pytest.raises(FileNotFoundError, match="jaxgen.convert.vgg16.write_npz"):
    vgg16.load_variables(str(tmp_path / "missing.npz"))
  np.savez(tmp_path / "truncated.npz", **{k: v for k, v in flat.items() if "features_28" not in k})
  with pytest.raises(ValueError, match="2 missing.*write_npz"):
    vgg16.load_variables(str(tmp_path / "truncated.npz"))
  (tmp_path / "text.npz").write_text("not an npz")
  with pytest.raises(ValueError, match="not an .npz.*write_npz"):
    vgg16.load_variables(str(tmp_path / "text.npz"))
  np.savez(tmp_path / "negative.npz", **{**flat, "params/lin1": -flat["params/lin1"]})
  with pytest.raises(ValueError, match=">= 0"):
    vgg16.load_variables(str(tmp_path / "negative.npz"))


def test_project_image_reports_the_vgg16_lpips(weights_npz):
  """--distance=vgg16 through `project_image` on the tiny model (8x8 RGB, upsampled to 16x16 for VGG): the reported
  distance is the LPIPS of the projection to the target, recomputed here from the features."""
  model = sg.tiny()
  state = init(model, 2)
  s = types.SimpleNamespace(model=model)  # project_image reads only the model
  target = np.asarray(jax.random.randint(jax.random.key(1), (8, 8, 3), 0, 256), np.uint8)
  p, image = sg.project_image(s, state, target, steps=2, distance="vgg16", vgg16_weights=weights_npz["lin"],
                              w_avg_samples=16)
  assert image.shape == (8, 8, 3) and image.dtype == np.uint8
  variables = vgg16.load_variables(weights_npz["lin"])
  synth = sg.synthesize(state["ema_params"], p.ws[None], p.noise, model=model)  # [1, 8, 8, 3]
  x = vgg16.projector_input(jnp.concatenate([networks.to_float(jnp.asarray(target))[None], synth]))
  phi = vgg16.lpips_features(variables, x)
  np.testing.assert_allclose(p.distance, jnp.sum(jnp.square(phi[0] - phi[1])), rtol=1e-4)
  assert np.isfinite(np.asarray(p.ws)).all() and 0 < float(p.distance) < 10
  with pytest.raises(ValueError, match="--vgg16=FILE"):
    sg.projection_features(s, "vgg16")


def test_project_command_needs_the_vgg16_file_in_one_line_before_restoring(tmp_path):
  """A run directory with only config.json (no checkpoint): the flag's error comes first, in one line."""
  checkpoints.check_workdir_config(str(tmp_path), stylegan2_quickstart.get_config("smoke"))
  run = lambda *flags: subprocess.run([sys.executable, "-m", "experiments.project", f"--workdir={tmp_path}",
                                       f"--image={tmp_path / 'x.png'}", *flags], cwd=REPO, capture_output=True,
                                      text=True, timeout=300)
  for flags, message in ((["--distance=vgg16"], "--distance=vgg16 needs --vgg16=FILE"),
                         (["--distance=vgg16", f"--vgg16={tmp_path / 'missing.npz'}"], "No VGG16 weights file")):
    out = run(*flags)
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr[-2000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last and "write_npz" in last, last
