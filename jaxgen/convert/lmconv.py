"""ajayjain/lmconv checkpoints -> `autoregressive.lmconv.Model` (research/faithfulness-glow-lmconv.md, 2.4).

The README's checkpoints (`cifar_s8.pth`, `binary_mnist_ep159_s8.pth`, `grayscale_mnist_ep299_hilbert8.pth`,
`celeba_ep749_s8.pth`) are `torch.save` dicts holding "model_state_dict" (the `--ours` model `OurPixelCNN`) and
"args" (main.py's flags). The mapping is exact: convolutions OIHW -> HWIO; the weight-normed NIN layers folded,
W = g v / ||v||; the RGB DMOL output rows permuted from the official per-channel blocks [means, log-scales, coeffs]
to jaxgen's [means | log-scales | coeffs]; the binarized 2-way softmax becomes one Bernoulli logit l1 - l0. The
generation orders are rebuilt from args (base order, base-order flags, --randomize_order's 8 variants,
--order_variants, --train_masks / --test_masks) and matched to jaxgen's order names.
"""
import argparse

import numpy as np

from jaxgen import convert as convert_lib

WHAT = "an LMConv checkpoint (a dict with model_state_dict and args, as ajayjain/lmconv's main.py saves)"
# official base order -> the jaxgen order that visits the same pixels in the same sequence
BASE_ORDERS = {"raster_scan": "raster", "s_curve": "s_curve", "hilbert": "hilbert",
               "gilbert2d": "hilbert_rot90_flip"}  # gilbert2d_idx(rows, cols) is jaxgen's gilbert, transposed


def read(path):
  """{"state_dict": {key: numpy}, "args": main.py's flags as a dict} of an LMConv checkpoint."""
  obj = convert_lib.torch_load(path)
  convert_lib.check_family(obj, "lmconv", path, WHAT)
  args = obj["args"]
  args = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
  return {"state_dict": convert_lib.to_numpy(dict(obj["model_state_dict"])), "args": args}


# ------------------------------------------------------------------------------------------------ orders


def _official_orders(args, h, w):
  """main.py's list of generation orders (int [H*W, 2] each), from a jaxgen-built base."""
  from jaxgen.autoregressive import orders as orders_lib  # here: `read` needs only numpy and torch

  def transpose(o):
    return o[:, ::-1]

  def reflect_rows(o):
    return np.stack([h - 1 - o[:, 0], o[:, 1]], -1)

  def reflect_cols(o):
    return np.stack([o[:, 0], w - 1 - o[:, 1]], -1)

  out = []
  for name in args.get("order") or ["s_curve"]:
    if name not in BASE_ORDERS:
      raise convert_lib.ConversionError(f"args.order={name!r}: jaxgen has no such order (it has "
                                        f"{sorted(BASE_ORDERS)}); this checkpoint cannot be converted.")
    base = orders_lib.build(BASE_ORDERS[name], h, w)
    if args.get("base_order_transpose"):
      base = transpose(base)
    if args.get("base_order_reflect_rows"):
      base = reflect_rows(base)
    if args.get("base_order_reflect_cols"):
      base = reflect_cols(base)
    if args.get("randomize_order"):  # masking.augment_orders
      t = transpose(base)
      out += [base, reflect_rows(base), reflect_cols(base), reflect_rows(reflect_cols(base)),
              t, reflect_rows(t), reflect_cols(t), reflect_rows(reflect_cols(t))]
    else:
      out.append(base)
  if args.get("order_variants"):
    out = [out[i] for i in args["order_variants"]]
  return out


def order_names(args, h, w):
  """(train_orders, eval_orders) as jaxgen names for main.py's orders (and --train_masks / --test_masks)."""
  from jaxgen.autoregressive import orders as orders_lib

  names = {}
  for base in orders_lib.BASES:
    for name in orders_lib.variants(base):
      names.setdefault(orders_lib.build(name, h, w).tobytes(), name)
  found = []
  for i, order in enumerate(_official_orders(args, h, w)):
    name = names.get(np.asarray(order, np.int32).tobytes())
    if name is None:
      raise convert_lib.ConversionError(f"Generation order {i} of args.order={args.get('order')} is none of "
                                        f"jaxgen's named orders on {h}x{w}; this checkpoint cannot be converted.")
    found.append(name)
  pick = lambda key: tuple(found[i] for i in args[key]) if args.get(key) else tuple(found)
  return pick("train_masks"), pick("test_masks")


# ------------------------------------------------------------------------------------------------ weights


def _conv(sd, prefix):
  """A locally masked conv (weight-normed when --normalization weight_norm; no bias with --no_bias)."""
  if prefix + "weight_v" in sd:
    v, g = sd[prefix + "weight_v"], sd[prefix + "weight_g"]
    weight = g * v / np.sqrt(np.sum(np.square(v), axis=(1, 2, 3), keepdims=True))
  else:
    weight = sd[prefix + "weight"]
  bias = sd.get(prefix + "bias", np.zeros(weight.shape[0], np.float32))
  return {"kernel": weight.transpose(2, 3, 1, 0), "bias": bias}


def _nin(sd, prefix):
  """torch weight_norm(nn.Linear): W = g v / ||v||, the norm over the input axis -> (kernel [in, out], bias)."""
  v, g = sd[prefix + "lin_a.weight_v"], sd[prefix + "lin_a.weight_g"]
  weight = g * v / np.sqrt(np.sum(np.square(v), axis=1, keepdims=True))  # [out, in]
  return weight.T, sd[prefix + "lin_a.bias"]


def dmol_permutation(k):
  """jaxgen DMOL column j <- official row perm[j], 3 channels and k logistics: official rows are
  [logits | per channel c: means, log-scales, coeffs], jaxgen's [logits | means | log-scales | coeffs]."""
  return np.array(list(range(k)) + [k + 3 * k * c + i for c in range(3) for i in range(k)]
                  + [2 * k + 3 * k * c + i for c in range(3) for i in range(k)]
                  + [3 * k + 3 * k * p + i for p in range(3) for i in range(k)])


def params_from(sd, model):
  """jaxgen `params` of the `--ours` state dict `sd` for model settings `model` (a dict)."""
  params = {"conv_init": _conv(sd, "u_init.")}
  down = (model["nr_resnet"], model["nr_resnet"] + 1, model["nr_resnet"] + 1)
  for b in range(3):
    for i in range(model["nr_resnet"]):
      pre = f"up_layers.{b}.u_stream.{i}."
      params[f"up_{b}_resnet_{i}"] = {"conv_in": _conv(sd, pre + "conv_input."),
                                      "conv_out": _conv(sd, pre + "conv_out.")}
    for i in range(down[b]):
      pre = f"down_layers.{b}.u_stream.{i}."
      kernel, bias = _nin(sd, pre + "nin_skip.")
      params[f"down_{b}_resnet_{i}"] = {"conv_in": _conv(sd, pre + "conv_input."),
                                        "conv_out": _conv(sd, pre + "conv_out."),
                                        "nin_skip": {"Dense_0": {"kernel": kernel, "bias": bias}}}
  for b in range(2):  # official names from PixelCNN++, where these convolutions resized the stream
    params[f"up_{b}_dilated"] = _conv(sd, f"downsize_u_stream.{b}.")
    params[f"down_{b}_dilated"] = _conv(sd, f"upsize_u_stream.{b}.")
  kernel, bias = _nin(sd, "nin_out.")
  if model["likelihood"] == "bernoulli":  # softmax over (l0, l1) = Bernoulli with logit l1 - l0
    kernel, bias = kernel[:, 1:] - kernel[:, :1], bias[1:] - bias[:1]
  elif model["image_shape"][2] == 3:
    perm = dmol_permutation(model["nr_logistic_mix"])
    kernel, bias = kernel[:, perm], bias[perm]
  params["nin_out"] = {"Dense_0": {"kernel": kernel, "bias": bias}}
  return params


# ------------------------------------------------------------------------------------------------ settings


def _image_shape(args, channels):
  dataset = str(args.get("dataset", ""))
  if "mnist" in dataset:
    return (28, 28, 1)
  if "cifar" in dataset:
    return (32, 32, 3)
  if "celebahq" in dataset:
    size = int(args.get("celeba_size", 256))
    return (size, size, 3)
  raise convert_lib.ConversionError(f"args.dataset={dataset!r} is none of main.py's (mnist, cifar, celebahq); "
                                    f"set --config.model.image_shape=H,W,{channels} and --config.dataset.")


def model_config(official):
  """autoregressive.lmconv.Model keyword arguments; ConversionError naming what jaxgen cannot express."""
  sd, args = official["state_dict"], official["args"]
  if not args.get("ours", False) or args.get("two_stream", False):
    raise convert_lib.ConversionError("args.ours is false (or two_stream is set): this is the PixelCNN++ baseline, "
                                      "which jaxgen does not implement; only --ours checkpoints convert.")
  if args.get("learn_weight_for_masks"):
    raise convert_lib.ConversionError("args.learn_weight_for_masks is set: jaxgen's lmconv.Model has no mask "
                                      "weights (LocallyMaskedConv.mask_weight is not plumbed through); cannot convert.")
  normalization = args.get("normalization", "weight_norm")
  if normalization not in ("pono", "none", "weight_norm"):
    raise convert_lib.ConversionError(f"args.normalization={normalization!r}: jaxgen has pono and none (weight_norm "
                                      f"is folded into the weights); cannot convert.")
  if "u_init.weight" not in sd and "u_init.weight_v" not in sd:
    raise convert_lib.ConversionError("model_state_dict lacks u_init.weight: not an OurPixelCNN state dict.")
  init = sd.get("u_init.weight", sd.get("u_init.weight_v"))
  channels = init.shape[1] - 1  # the image channels plus the ones channel
  image_shape = _image_shape(args, channels)
  if image_shape[2] != channels:
    raise convert_lib.ConversionError(f"args.dataset={args.get('dataset')!r} has {image_shape[2]} channel(s) but the "
                                      f"state dict's first layer takes {channels}; the file is inconsistent.")
  out = sd["nin_out.lin_a.bias"].shape[0]
  binarize = bool(args.get("binarize", False))
  mix = out // (10 if channels == 3 else 3)
  if not binarize and out != mix * (10 if channels == 3 else 3):
    raise convert_lib.ConversionError(f"nin_out has {out} outputs, not a DMOL head for {channels} channel(s).")
  train_orders, eval_orders = order_names(args, image_shape[0], image_shape[1])
  model = dict(image_shape=image_shape, likelihood="bernoulli" if binarize else "dmol",
               nr_resnet=int(args.get("nr_resnet", 5)), nr_filters=init.shape[0], kernel_size=init.shape[-1],
               max_dilation=int(args.get("max_dilation", 2)), dropout_rate=float(args.get("dropout_prob", 0.0)),
               normalization="pono" if normalization == "pono" else "none", train_orders=train_orders,
               eval_orders=eval_orders, num_bits=int(args.get("n_bits", 8)))
  if not binarize:
    model["nr_logistic_mix"] = mix
  return model


def convert(official, overrides=None):
  """(config, {"params"}) of an LMConv checkpoint (`read`'s dict)."""
  from experiments.configs import lmconv_cifar10  # here: `read` needs only numpy and torch
  from experiments.configs import lmconv_mnist_binarized

  args = official["args"]
  model = model_config(official)
  binarized_mnist = model["likelihood"] == "bernoulli"
  config = (lmconv_mnist_binarized if model["image_shape"][2] == 1 else lmconv_cifar10).get_config()
  if model["image_shape"][2] == 1 and not binarized_mnist:
    config.binarize = ""  # grayscale MNIST: 8-bit DMOL
    config.model.nr_logistic_mix = model["nr_logistic_mix"]
  dataset = str(args.get("dataset", ""))
  if "celebahq" in dataset:
    # TFDS's CelebA-HQ (manual download; a train split only, unlike lmconv's celeba_data.py split).
    config.dataset = f"celeb_a_hq/{model['image_shape'][0]}"
    config.eval_split = "train"
  config.model.update(model)
  config.batch_size = int(args.get("batch_size", config.batch_size))
  config.optimizer.update(lr=float(args.get("lr", 2e-4)))
  config = convert_lib.apply_overrides(config, overrides)
  return config, {"params": params_from(official["state_dict"], config.model)}
