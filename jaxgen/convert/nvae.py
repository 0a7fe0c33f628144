"""NVlabs/NVAE checkpoints -> `vae.nvae.Model` (research/faithfulness-nvae-stylegan2.md, 2.1).

The published checkpoints (MNIST, CIFAR-10, CelebA 64, CelebA-HQ 256, FFHQ; the README's Google Drive folder) are
train.py's `torch.save` dicts: `state_dict`, `args` (the argparse.Namespace of every flag) and optimiser state.
The model config comes from `args`; the mapping is parameter for parameter:
  conv weight [O, I/g, kh, kw] -> kernel [kh, kw, I/g, O], log_weight_norm [O, 1, 1, 1] -> [O];
  BatchNorm weight/bias -> params scale/bias, running_mean/var -> batch_stats mean/var;
  Linear weight [out, in] -> kernel [in, out]; prior_ftr0 [C, h, w] -> [h, w, C];
  the output convolution's channels reordered from the official DMOL layout to jaxgen's (`dmol_permutation`).
Dropped: `*.weight_normalized` (a second registration of the weights of the convolutions without weight
normalisation) and `*.num_batches_tracked`. The spectral regulariser's power-iteration vectors are not in the
files (official model.py keeps them outside the state dict); they are computed as jaxgen's init computes them, by
power iteration on the converted kernels. Only the optimiser state is not ported (fine-tuning starts it afresh).

jaxgen reads MNIST, CIFAR-10 and ImageNet 32x32 from TFDS; the CelebA and FFHQ configs name a `folder:` dataset to
replace with --config.dataset=folder:DIR (python -m experiments.prepare_data, with the official crops). At 8 bits
jaxgen's DMOL reads level 254 as its own bin where the official code gives it the top bin's mass, so jaxgen's
CIFAR-10 NLL reads slightly higher than the official evaluate.py (research note, 1 row 7).
"""
import re

import numpy as np

from jaxgen import convert as convert_lib

WHAT = "an NVAE checkpoint (train.py's dict with state_dict and args)"
# Official --dataset -> (image shape, jaxgen dataset, training images for the steps of an epoch).
DATASETS = {
    "mnist": ((28, 28, 1), "mnist", 60_000),
    "cifar10": ((32, 32, 3), "cifar10", 50_000),
    "imagenet_32": ((32, 32, 3), "downsampled_imagenet/32x32", 1_281_149),
    "celeba_64": ((64, 64, 3), "folder:CELEBA_64_DIR", 162_770),
    "celeba_256": ((256, 256, 3), "folder:CELEBA_HQ_256_DIR", 27_000),
    "ffhq": ((256, 256, 3), "folder:FFHQ_256_DIR", 63_000),
}
# Flags older files lack, with the defaults official evaluate.py gives them.
OLD_FILE_DEFAULTS = {"ada_groups": False, "min_groups_per_scale": 1, "num_mixture_dec": 10}
MODEL_FLAGS = ("num_channels_enc", "num_channels_dec", "num_preprocess_blocks", "num_preprocess_cells",
               "num_postprocess_blocks", "num_postprocess_cells", "num_cell_per_cond_enc", "num_cell_per_cond_dec",
               "num_latent_scales", "num_groups_per_scale", "num_latent_per_group", "ada_groups",
               "min_groups_per_scale", "num_mixture_dec", "num_nf", "use_se", "res_dist")


def read(path):
  """{"state_dict": {name: numpy}, "args": {flag: value}, "epoch", "global_step"} of an NVAE checkpoint."""
  obj = convert_lib.torch_load(path)
  convert_lib.check_family(obj, "nvae", path, WHAT)
  args = obj["args"]
  return {"state_dict": convert_lib.to_numpy(dict(obj["state_dict"])),
          "args": dict(vars(args)) if hasattr(args, "__dict__") else dict(args),
          "epoch": obj.get("epoch"), "global_step": obj.get("global_step")}


def dmol_permutation(num_mixtures, num_channels=3):
  """perm with jaxgen channel j = official channel perm[j] of the decoder output (K components).

  Official (distributions.py `DiscMixLogistic`): [logits K | per colour c: means K, log-scales K, coeffs K];
  jaxgen (`distributions`): [logits K | means C*K | log-scales C*K | coeffs for pairs (1,0), (2,0), (2,1)].
  """
  k, c = num_mixtures, num_channels
  block = lambda ch, part: [k + 3 * k * ch + part * k + m for m in range(k)]
  perm = list(range(k))
  for part in range(3):  # means, log-scales, coefficients (official coefficient slot p is jaxgen's pair p)
    for ch in range(c):
      perm += block(ch, part)
  return np.asarray(perm)


def _conv(x):
  return x.transpose(2, 3, 1, 0) if x.ndim == 4 else x


def _leaf(kind, value):
  """(collection, leaf name, value) of a torch parameter or buffer named `kind` of a conv, BN or Linear."""
  if kind == "weight" and value.ndim == 4:
    return "params", "kernel", _conv(value)
  if kind == "weight" and value.ndim == 2:
    return "params", "kernel", value.T
  if kind == "log_weight_norm":
    return "params", "log_weight_norm", value.reshape(-1)
  if kind == "weight":  # BatchNorm gamma
    return "params", "scale", value
  if kind == "running_mean":
    return "batch_stats", "mean", value
  if kind == "running_var":
    return "batch_stats", "var", value
  return "params", kind, value


def _cell_path(rest, up):
  """jaxgen path inside a cell for the official name `rest` (after "tower.k."), or None."""
  m = re.fullmatch(r"_ops\.(\d+)\.(bn_act|conv_0)\.(\w+)", rest)  # encoder cell: BNSwishConv x 2
  if m:
    return [f"BNSwishConv_{m[1]}", "BatchNorm_0" if m[2] == "bn_act" else "Conv2D_0"], m[3]
  m = re.fullmatch(r"_ops\.0\.conv\.(\d+)\.(.+)", rest)  # decoder cell: InvertedResidual
  if m:
    i = int(m[1]) - (1 if up else 0)  # official index 0 of an up cell is the nearest-neighbour Upsample
    sub = {(0, "bn"): "BatchNorm_0", (1, "conv.0"): "Conv2D_0", (1, "conv.1"): "BatchNorm_1",
           (2, "conv.0"): "Conv2D_1", (2, "conv.1"): "BatchNorm_2", (4, "bn"): "BatchNorm_3"}
    if i == 3 and "." not in m[2]:
      return ["InvertedResidual_0", "Conv2D_2"], m[2]
    module, _, kind = m[2].rpartition(".")
    if (i, module) in sub:
      return ["InvertedResidual_0", sub[(i, module)]], kind
    return None
  m = re.fullmatch(r"skip\.conv_([1-4])\.(\w+)", rest)  # down cell: FactorizedReduce
  if m:
    return ["FactorizedReduce_0", f"Conv2D_{int(m[1]) - 1}"], m[2]
  m = re.fullmatch(r"skip\.1\.(\w+)", rest)  # up cell: bilinear upsample + Conv1x1
  if m:
    return ["Conv2D_0"], m[1]
  m = re.fullmatch(r"se\.se\.([02])\.(\w+)", rest)
  if m:
    return ["SqueezeExcitation_0", f"Dense_{int(m[1]) // 2}"], m[2]
  m = re.fullmatch(r"conv\.(\w+)", rest)  # EncCombinerCell / DecCombinerCell
  if m:
    return ["Conv2D_0"], m[1]
  return None


def jaxgen_path(name, up_cells):
  """(module path list, torch leaf kind) in jaxgen's Model of the official state-dict entry `name`, or None.

  up_cells: the "tower.k" prefixes of up-sampling cells (their InvertedResidual starts with an Upsample).
  """
  m = re.fullmatch(r"(pre_process|enc_tower|dec_tower|post_process)\.(\d+)\.(.+)", name)
  if m:
    found = _cell_path(m[3], f"{m[1]}.{m[2]}" in up_cells)
    return None if found is None else ([f"{m[1]}_{m[2]}"] + found[0], found[1])
  m = re.fullmatch(r"nf_cells\.(\d+)\.cell([12])\.(conv\.convz\.[02]|mu\.conv_0)\.(\w+)", name)
  if m:
    inner = {"conv.convz.0": ["ARInvertedResidual_0", "Conv2D_0"], "conv.convz.2": ["ARInvertedResidual_0", "Conv2D_1"],
             "mu.conv_0": ["Conv2D_0"]}[m[3]]
    return [f"nf_cells_{m[1]}", f"CellAR_{int(m[2]) - 1}"] + inner, m[4]
  for pattern, module in ((r"stem\.(\w+)", "stem"), (r"enc0\.1\.(\w+)", "enc0"),
                          (r"image_conditional\.1\.(\w+)", "image_conditional"),
                          (r"stem_decoder\.(\w+)", "stem_decoder")):
    m = re.fullmatch(pattern, name)
    if m:
      return [module], m[1]
  m = re.fullmatch(r"(enc_sampler)\.(\d+)\.(\w+)|(dec_sampler)\.(\d+)\.1\.(\w+)", name)
  if m:
    tower, index, kind = (m[1], m[2], m[3]) if m[1] else (m[4], m[5], m[6])
    return [f"{tower}_{index}"], kind
  return None


def model_config(args):
  """`vae.nvae.Model` kwargs from the checkpoint's `args`; ConversionError for what jaxgen cannot express."""
  args = OLD_FILE_DEFAULTS | dict(args)
  if args.get("arch_instance", "res_mbconv") != "res_mbconv":
    raise convert_lib.ConversionError(f"args.arch_instance={args['arch_instance']!r}: jaxgen implements only the "
                                      f"res_mbconv cells of every published NVAE model.")
  if args.get("dataset") not in DATASETS:
    raise convert_lib.ConversionError(f"args.dataset={args.get('dataset')!r}: jaxgen converts NVAE models of "
                                      f"{sorted(DATASETS)}.")
  missing = [k for k in MODEL_FLAGS + ("num_x_bits",) if k not in args]
  if missing:
    raise convert_lib.ConversionError(f"args lacks {missing}; this is no NVAE train.py checkpoint.")
  binarized = args["dataset"] == "mnist"
  if args["num_mixture_dec"] == 1 and not binarized:
    raise convert_lib.ConversionError("args.num_mixture_dec=1 (official NormalDecoder): jaxgen's NVAE has only "
                                      "the discretized logistic mixture and Bernoulli decoders.")
  shape = DATASETS[args["dataset"]][0]
  model = {k: args[k] for k in MODEL_FLAGS}
  model |= dict(image_shape=shape, binarized=binarized, num_bits=8 if binarized else int(args["num_x_bits"]),
                pad=2 if binarized else 0)
  return model


def convert(official, overrides=None):
  """(config, {"params", "model_state"}) of an NVAE checkpoint (`read`'s dict)."""
  from experiments.configs import nvae_cifar10  # here: `read` needs only numpy and torch
  from experiments.configs import nvae_mnist

  sd, args = official["state_dict"], OLD_FILE_DEFAULTS | dict(official["args"])
  model = model_config(args)
  up_cells = {name.rsplit(".skip.1.", 1)[0] for name in sd if ".skip.1." in name}
  variables, unknown = {"params": {}, "batch_stats": {}}, []
  for name, value in sd.items():
    if name.endswith((".weight_normalized", ".num_batches_tracked")):
      continue
    if name == "prior_ftr0":
      variables["params"]["prior_ftr0"] = value.transpose(1, 2, 0)
      continue
    found = jaxgen_path(name, up_cells)
    if found is None:
      unknown.append(name)
      continue
    path, kind = found
    collection, leaf, value = _leaf(kind, value)
    node = variables[collection]
    for p in path:
      node = node.setdefault(p, {})
    node[leaf] = value
  if unknown:
    raise convert_lib.ConversionError(f"state_dict entry {unknown[0]} (and {len(unknown) - 1} more) has no place in "
                                      f"jaxgen's NVAE; the file is no res_mbconv NVAE model.")
  if not model["binarized"] and "image_conditional" in variables["params"]:
    out = variables["params"]["image_conditional"]
    perm = dmol_permutation(model["num_mixture_dec"])
    if out["kernel"].shape[-1] != len(perm):
      raise convert_lib.ConversionError(f"image_conditional has {out['kernel'].shape[-1]} output channels, not the "
                                        f"{len(perm)} of a {model['num_mixture_dec']}-component RGB mixture.")
    variables["params"]["image_conditional"] = {k: v[..., perm] for k, v in out.items()}

  config = (nvae_mnist if model["binarized"] else nvae_cifar10).get_config()
  _, dataset, num_train = DATASETS[args["dataset"]]
  gpus = int(args.get("num_proc_node", 1)) * int(args.get("num_process_per_node", 1))
  batch_size = int(args.get("batch_size", config.batch_size // max(gpus, 1))) * gpus
  steps_per_epoch = -(-num_train // batch_size)
  total_steps = int(args.get("epochs", 400)) * steps_per_epoch
  config.dataset, config.batch_size, config.total_steps = dataset, batch_size, total_steps
  model |= dict(kl_anneal_steps=int(args.get("kl_anneal_portion", 0.3) * total_steps),
                kl_const_steps=int(args.get("kl_const_portion", 1e-4) * total_steps),
                kl_const_coeff=float(args.get("kl_const_coeff", 1e-4)),
                weight_decay_norm=float(args.get("weight_decay_norm", 0.0)),
                weight_decay_norm_init=float(args.get("weight_decay_norm_init", 10.0)),
                weight_decay_norm_anneal=bool(args.get("weight_decay_norm_anneal", False)))
  config.model = model
  config.optimizer = dict(config.optimizer, lr=float(args.get("learning_rate", 1e-2)),
                          l2_weight_decay=float(args.get("weight_decay", 3e-4)),
                          warmup_steps=int(args.get("warmup_epochs", 5)) * steps_per_epoch,
                          end_lr_factor=float(args.get("learning_rate_min", 1e-4)) /
                          float(args.get("learning_rate", 1e-2)))
  config = convert_lib.apply_overrides(config, overrides)
  batch_stats = with_power_iteration_vectors(config, variables)
  return config, {"params": variables["params"], "model_state": {"batch_stats": batch_stats}}


def _normalize(x):
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-3)  # `spectral._normalize`


def with_power_iteration_vectors(config, variables):
  """The BatchNorm statistics plus the spectral regulariser's u, v as jaxgen's init computes them
  (`spectral.SpectralRegularizer`: 10 x 4 power iterations from its fixed start vectors) on the converted kernels.

  The model is only traced (`jax.eval_shape`, no compilation) to learn the order in which the convolutions run;
  the effective kernels (`cells.Conv2D.effective_kernel`) and the iterations are numpy (equal to float32
  round-off; compiling them costs more than the whole conversion).
  """
  import flax  # here: `read` needs only numpy and torch
  import flax.linen as nn
  import jax
  import jax.numpy as jnp

  from jaxgen.training import trainer
  from jaxgen.vae import cells
  from jaxgen.vae import spectral

  _, model = trainer.build_model(config)
  convs = []  # (module path, static mask or None, weight-normalised?) in the order the convolutions run

  def record(next_fun, args, kwargs, context):
    if context.method_name == "effective_kernel" and isinstance(context.module, cells.Conv2D):
      convs.append((context.module.path, args[2], args[1] is not None))
    return next_fun(*args, **kwargs)

  images = jnp.zeros((1,) + tuple(model.image_shape), jnp.uint8)
  try:
    with nn.intercept_methods(record):
      jax.eval_shape(lambda v: model.apply(v, images, train=False, method="losses", mutable=["batch_stats"],
                                           rngs={"sample": jax.random.key(0)}), variables)
  except (flax.errors.FlaxError, TypeError, ValueError) as e:  # weights that do not fit the model args describe
    raise convert_lib.ConversionError(f"The converted weights do not fit the model args describe "
                                      f"({str(e).splitlines()[0][:200]}); the file's args and state_dict disagree.") \
        from None
  groups = {}
  for path, mask, weight_norm in convs:
    leaves = variables["params"]
    for name in path:
      leaves = leaves[name]
    kernel = leaves["kernel"] * (1.0 if mask is None else mask)
    if weight_norm:
      norm = np.sqrt(np.sum(kernel * kernel, axis=(0, 1, 2)))
      kernel = np.exp(leaves["log_weight_norm"]) * kernel / (norm + 1e-5)
    matrix = spectral.kernel_to_matrix(np.asarray(kernel, np.float32))
    groups.setdefault(matrix.shape, []).append(matrix)
  vectors = {}
  for (r, c), mats in groups.items():
    w = np.stack(mats)  # [N, R, C]
    u = np.asarray(spectral.random_unit_vectors(w.shape[:2]))
    v = np.asarray(spectral.random_unit_vectors((w.shape[0], w.shape[2]), seed=1))
    for _ in range(spectral.FIRST_CALL_MULTIPLIER * model.num_power_iterations):  # `spectral.power_iteration`
      v = _normalize(np.einsum("nr,nrc->nc", u, w))
      u = _normalize(np.einsum("nrc,nc->nr", w, v))
    vectors[f"power_iteration_{r}x{c}"] = {"u": u, "v": v}
  return variables["batch_stats"] | {"spectral_regularizer": vectors}
