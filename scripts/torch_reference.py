#!/usr/bin/env python3
"""PyTorch/torchvision reference outputs for the candle port of torchvision's Mask R-CNN v1
(`maskrcnn_resnet50_fpn`, COCO_V1 weights).

Subcommands:

  fixtures   tests/fixtures/maskrcnn_tv/: (A) a NARROW Mask R-CNN built from torchvision's own
             classes with seeded random weights (saved as safetensors + .pth, new and old key names)
             and its outputs/intermediates on real images; (B) statistics of the FULL-WIDTH
             architecture with closed-form deterministic weights on a real Cityscapes frame.
  bench      PyTorch eager timing of the full-width maskrcnn_resnet50_fpn per stage (JSON).

Set up with `scripts/make_torch_venv.sh` and run e.g.

  .venv-torch/bin/python scripts/torch_reference.py fixtures --data ../shared/data \
      --out tests/fixtures/maskrcnn_tv
  .venv-torch/bin/python scripts/torch_reference.py bench --threads 2 \
      --image ../shared/data/cityscapes-seq/leftImg8bit_sequence/train/aachen/aachen_000000_000010_leftImg8bit.jpg

Pixels: PNG files are read with PIL; JPEG files are decoded by the project's own decoder
(`pedcache decode IN --png OUT`) and the PNG it writes is read back, so the Rust side sees
identical pixels. The model input is `torch.from_numpy(rgb_u8).permute(2,0,1).float() / 255`
(what torchvision's `to_tensor` gives). Test images are never written into the repo: fixtures
hold only numbers produced by running the models.

Everything model-side is captured from torchvision's own modules with forward hooks or by wrapping
bound methods (`rpn.filter_proposals`, `transform.postprocess`) that call the original: nothing
in the pipeline is re-implemented here.

Both models are built the way `maskrcnn_resnet50_fpn(weights=COCO_V1)` builds the published
model: FrozenBatchNorm2d everywhere in the body, and `overwrite_eps(model, 0.0)` (the COCO_V1
weights are used with eps = 0 in every FrozenBatchNorm2d; see torchvision
models/detection/mask_rcnn.py). A port must use eps = 0 for these weights.
"""

import argparse
import collections
import copy
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent

NARROW_CASES = [
    ("city_000000_000010", "cityscapes-seq/leftImg8bit_sequence/train/aachen/aachen_000000_000010_leftImg8bit.jpg"),
    ("city_000005_000020", "cityscapes-seq/leftImg8bit_sequence/train/aachen/aachen_000005_000020_leftImg8bit.jpg"),
    ("pennfudan_1", "pennfudan/PNGImages/FudanPed00004.png"),
]
FULLWIDTH_CASE = "cityscapes-seq/leftImg8bit_sequence/train/aachen/aachen_000000_000010_leftImg8bit.jpg"

# Narrow architecture (A). Everything not listed is torchvision's MaskRCNN default.
NARROW = {
    "resnet_block": "torchvision.models.resnet.Bottleneck (expansion 4, stride on conv2 = v1.5)",
    "layers": [1, 1, 1, 1],
    "stem": "conv1 7x7/2 3->64 (no bias) + FrozenBN(64) + ReLU + maxpool 3x3/2 pad 1",
    "planes": [8, 16, 32, 64],  # Bottleneck width (conv1/conv2 channels) per stage
    "stage_out_channels": [32, 64, 128, 256],  # planes * 4
    "fpn_out_channels": 32,
    "representation_size": 64,
    "num_classes": 91,
    "mask_head_layers": [32, 32, 32, 32],
    "mask_head_dilation": 1,
    "mask_predictor_dim_reduced": 32,
}
SEED = 0
# How the random weights are made informative (applied after torchvision's own init + seed 0):
# roi_heads.box_predictor.cls_score: weight *= CLS_SCORE_SCALE; bias = -CLS_SCORE_SCALE * W0 @ mean(h)
# + CLS_BIAS_ADD, where W0 is the seeded weight and mean(h) the mean box_head output over the 1000
# proposals of the calibration image (NARROW_CASES[0]): every class logit then varies around 0 across
# proposals, background gets +12 (so only a handful of proposal/class pairs clear 0.05) and person +4.
CLS_SCORE_SCALE = 40.0
CLS_BIAS_ADD = {0: 12.0, 1: 4.0}
RPN_CLS_SCALE = 100.0        # rpn.head.cls_logits.weight *= this (init std 0.01 -> 1: no near-ties)
MASK_LOGITS_SCALE = 4.0      # roi_heads.mask_predictor.mask_fcn_logits.weight *= this


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- images


def load_rgb(path, pedcache):
    """uint8 [H,W,3]. PNG via PIL; anything else via the project's decoder (`pedcache decode`)."""
    path = Path(path)
    if path.suffix.lower() == ".png":
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB")).copy()
    exe = Path(pedcache)
    if not exe.is_absolute():
        exe = REPO / exe
    if not exe.exists():
        sys.exit(f"project decoder not found: {exe} (build it: cargo build --release)")
    with tempfile.TemporaryDirectory() as td:
        out = Path(td) / "decoded.png"
        subprocess.run(
            [str(exe), "decode", "--threads", "1", str(path), "--png", str(out)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        with Image.open(out) as im:
            return np.asarray(im.convert("RGB")).copy()


def to_input(rgb):
    import torch

    return torch.from_numpy(rgb).permute(2, 0, 1).float().div(255.0)


def resolve(p):
    p = Path(p)
    return p if p.is_absolute() else (Path.cwd() / p)


# ----------------------------------------------------------------------------- models


def build_narrow(calib_x=None):
    """Narrow Mask R-CNN from torchvision's own classes; seeded, FrozenBN buffers randomized.
    calib_x: the calibration image tensor [3,H,W] for the cls_score bias (None: leave it seeded)."""
    import torch
    from torch import nn
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection._utils import overwrite_eps
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNN, MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.models.resnet import Bottleneck, ResNet
    from torchvision.ops import FrozenBatchNorm2d
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    torch.manual_seed(SEED)

    class NarrowResNet(ResNet):
        """torchvision ResNet(Bottleneck, [1,1,1,1]) whose four stages are rebuilt by torchvision's own
        `_make_layer` with smaller `planes` (the stock code hard-codes 64/128/256/512). Stem, block
        code, downsample (1x1 conv + norm on each stage's first block) and init are torchvision's."""

        def __init__(self, planes):
            super().__init__(Bottleneck, NARROW["layers"], norm_layer=FrozenBatchNorm2d)
            self.inplanes = 64
            self.layer1 = self._make_layer(Bottleneck, planes[0], NARROW["layers"][0])
            self.layer2 = self._make_layer(Bottleneck, planes[1], NARROW["layers"][1], stride=2)
            self.layer3 = self._make_layer(Bottleneck, planes[2], NARROW["layers"][2], stride=2)
            self.layer4 = self._make_layer(Bottleneck, planes[3], NARROW["layers"][3], stride=2)
            self.fc = nn.Linear(planes[3] * Bottleneck.expansion, 1000)  # dropped by IntermediateLayerGetter
            for m in self.modules():  # same init as ResNet.__init__
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    body = NarrowResNet(NARROW["planes"])
    c = NARROW["fpn_out_channels"]
    backbone = BackboneWithFPN(
        body,
        return_layers={"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"},
        in_channels_list=NARROW["stage_out_channels"],
        out_channels=c,
        extra_blocks=LastLevelMaxPool(),
        norm_layer=None,
    )
    rep = NARROW["representation_size"]
    model = MaskRCNN(
        backbone,
        num_classes=None,
        box_head=TwoMLPHead(c * 7 * 7, rep),
        box_predictor=FastRCNNPredictor(rep, NARROW["num_classes"]),
        mask_head=MaskRCNNHeads(c, tuple(NARROW["mask_head_layers"]), NARROW["mask_head_dilation"]),
        mask_predictor=MaskRCNNPredictor(
            NARROW["mask_head_layers"][-1], NARROW["mask_predictor_dim_reduced"], NARROW["num_classes"]
        ),
    )
    overwrite_eps(model, 0.0)

    g = torch.Generator().manual_seed(SEED + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, FrozenBatchNorm2d):
                n = m.weight.numel()
                m.weight.copy_(0.5 + torch.rand(n, generator=g))  # U(0.5, 1.5)
                m.bias.copy_(0.1 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=g))  # U(0.5, 2.0)
        model.rpn.head.cls_logits.weight.mul_(RPN_CLS_SCALE)
        model.roi_heads.mask_predictor.mask_fcn_logits.weight.mul_(MASK_LOGITS_SCALE)
    model.eval()
    if calib_x is not None:
        feats = {}
        h = model.roi_heads.box_head.register_forward_hook(lambda m, i, o: feats.__setitem__("h", o))
        with torch.no_grad():
            model([calib_x])
        h.remove()
        with torch.no_grad():
            cls = model.roi_heads.box_predictor.cls_score
            mean_h = feats["h"].double().mean(0)
            bias = -CLS_SCORE_SCALE * (cls.weight.double() @ mean_h)
            for c, v in CLS_BIAS_ADD.items():
                bias[c] += v
            cls.weight.mul_(CLS_SCORE_SCALE)
            cls.bias.copy_(bias.float())
    return model


def build_fullwidth():
    """`maskrcnn_resnet50_fpn` exactly as torchvision builds it for weights=COCO_V1 (FrozenBN body,
    trainable_backbone_layers=3, eps overwritten to 0), minus the download."""
    from torchvision.models.detection._utils import overwrite_eps
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.models.detection.mask_rcnn import MaskRCNN
    from torchvision.models.resnet import resnet50
    from torchvision.ops import FrozenBatchNorm2d

    backbone = resnet50(weights=None, norm_layer=FrozenBatchNorm2d)
    backbone = _resnet_fpn_extractor(backbone, 3)
    model = MaskRCNN(backbone, num_classes=91)
    overwrite_eps(model, 0.0)
    return model.eval()


def state_dict_clean(model):
    return collections.OrderedDict(
        (k, v.detach().clone().contiguous()) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")
    )


def new_to_old_key(k):
    """torchvision >= 0.8 (version 2) key -> the pre-version-2 name used by the published COCO file.
    Inverse of the `_load_from_state_dict` conversions in ops/feature_pyramid_network.py
    (FeaturePyramidNetwork), models/detection/rpn.py (RPNHead) and models/detection/mask_rcnn.py
    (MaskRCNNHeads)."""
    import re

    m = re.fullmatch(r"(.*\.fpn\.(?:inner_blocks|layer_blocks)\.\d+)\.0\.(weight|bias)", k)
    if m:
        return f"{m.group(1)}.{m.group(2)}"
    m = re.fullmatch(r"(.*rpn\.head\.conv)\.0\.0\.(weight|bias)", k)
    if m:
        return f"{m.group(1)}.{m.group(2)}"
    m = re.fullmatch(r"(.*roi_heads\.mask_head)\.(\d+)\.0\.(weight|bias)", k)
    if m:
        return f"{m.group(1)}.mask_fcn{int(m.group(2)) + 1}.{m.group(3)}"
    return k


OLD_NEW_MAPPING = [
    ["backbone.fpn.inner_blocks.{i}.{weight|bias}", "backbone.fpn.inner_blocks.{i}.0.{weight|bias}", "i = 0..3"],
    ["backbone.fpn.layer_blocks.{i}.{weight|bias}", "backbone.fpn.layer_blocks.{i}.0.{weight|bias}", "i = 0..3"],
    ["rpn.head.conv.{weight|bias}", "rpn.head.conv.0.0.{weight|bias}", ""],
    ["roi_heads.mask_head.mask_fcn{i+1}.{weight|bias}", "roi_heads.mask_head.{i}.0.{weight|bias}", "i = 0..3"],
]


# ----------------------------------------------------------------------------- capture


def stats64(t):
    """[mean, std (population, ddof=0), min, max] in float64 over the whole tensor."""
    x = t.detach().double()
    return [x.mean().item(), x.std(unbiased=False).item(), x.min().item(), x.max().item()]


def per_channel_stats(t):
    """f32 [C,4]: per channel of a [1,C,H,W] tensor: mean, std (ddof=0), min, max (float64 accumulation)."""
    import torch

    x = t.detach()[0].double().flatten(1)
    return torch.stack(
        [x.mean(1), x.std(1, unbiased=False), x.min(1).values, x.max(1).values], dim=1
    ).float()


class Capture:
    """Forward hooks / method wrappers on a torchvision MaskRCNN that record its own intermediates."""

    def __init__(self, model):
        self.model = model
        self.rec = {}
        self.handles = []
        m = model

        def hook(name):
            def f(_mod, _inp, out):
                self.rec[name] = out

            return f

        def hook_in(name):
            def f(_mod, inp, _out):
                self.rec[name] = inp

            return f

        self.handles.append(m.transform.register_forward_hook(hook("transform")))
        self.handles.append(m.backbone.body.maxpool.register_forward_hook(hook("stem")))
        self.handles.append(m.backbone.body.register_forward_hook(hook("body")))
        self.handles.append(m.backbone.register_forward_hook(hook("fpn")))
        self.handles.append(m.rpn.head.register_forward_hook(hook("rpn_head")))
        self.handles.append(m.roi_heads.box_roi_pool.register_forward_hook(hook("box_roi_pool")))
        self.handles.append(m.roi_heads.box_head.register_forward_hook(hook("box_head")))
        self.handles.append(m.roi_heads.box_predictor.register_forward_hook(hook("box_predictor")))
        self.handles.append(m.roi_heads.mask_roi_pool.register_forward_hook(hook("mask_roi_pool")))
        self.handles.append(m.roi_heads.mask_predictor.register_forward_hook(hook("mask_predictor")))

        orig_filter = m.rpn.filter_proposals

        def filter_proposals(*a, **k):
            out = orig_filter(*a, **k)
            self.rec["proposals"] = ([b.clone() for b in out[0]], [s.clone() for s in out[1]])
            return out

        m.rpn.filter_proposals = filter_proposals

        orig_post = m.transform.postprocess

        def postprocess(result, image_shapes, original_image_sizes):
            self.rec["pre_paste"] = copy.deepcopy(result)
            return orig_post(result, image_shapes, original_image_sizes)

        m.transform.postprocess = postprocess

    def run(self, x):
        import torch

        self.rec = {}
        with torch.no_grad():
            out = self.model([x])
        return out[0], self.rec


# ----------------------------------------------------------------------------- fixtures (A)


def crop_offsets(h, w, size, seed, n_random=2):
    """[(y, x)]: the top-left corner, the centre, and n_random seeded positions (all clamped)."""
    rng = np.random.default_rng(seed)
    offs = [(0, 0), (max(0, h // 2 - size // 2), max(0, w // 2 - size // 2))]
    for _ in range(n_random):
        offs.append((int(rng.integers(0, max(1, h - size + 1))), int(rng.integers(0, max(1, w - size + 1)))))
    return offs


def narrow_case(model, cap, rgb, name):
    """Run the narrow model at box_score_thresh 0.05 and 0.0; return (tensors, case manifest)."""
    import torch

    t = {}
    doc = {}
    x = to_input(rgb)
    H, W = rgb.shape[:2]
    results = {}
    recs = {}
    saved = model.roi_heads.score_thresh
    for tag, thr in (("s005", 0.05), ("s000", 0.0)):
        model.roi_heads.score_thresh = thr
        results[tag], recs[tag] = cap.run(x)
    model.roi_heads.score_thresh = saved
    rec = recs["s005"]
    # the part before RoI-head post-processing does not depend on the threshold
    assert torch.equal(recs["s000"]["proposals"][0][0], rec["proposals"][0][0])

    # -- transform
    image_list, _ = rec["transform"]
    batch = image_list.tensors  # [1,3,Hp,Wp]
    rh, rw = image_list.image_sizes[0]
    Hp, Wp = batch.shape[-2:]
    t["input_size"] = torch.tensor([H, W], dtype=torch.int64)
    t["image_sizes"] = torch.tensor([rh, rw], dtype=torch.int64)
    t["batch_size_hw"] = torch.tensor([Hp, Wp], dtype=torch.int64)
    t["transformed_stats"] = per_channel_stats(batch)
    t["transformed_stats_valid"] = per_channel_stats(batch[:, :, :rh, :rw])
    # Not the image itself (the data's terms forbid redistribution): 64 probe pixels of the valid
    # region, corners included (they exercise the interpolation edge).
    pts = [(0, 0), (0, rw - 1), (rh - 1, 0), (rh - 1, rw - 1)]
    pts += [((k * 37 + 11) % rh, (k * 91 + 7) % rw) for k in range(60)]
    yx = torch.tensor(pts, dtype=torch.int64)
    t["transformed_probe_yx"] = yx
    t["transformed_probe"] = batch[0][:, yx[:, 0], yx[:, 1]].clone()

    # -- body
    stem = rec["stem"]
    t["stem_stats"] = torch.tensor(stats64(stem), dtype=torch.float64)
    t["stem_crop"] = stem[0, :, 0:8, 0:8].clone()
    body = rec["body"]
    for i, k in enumerate(["0", "1", "2", "3"]):
        f = body[k]
        t[f"layer{i + 1}_shape"] = torch.tensor(list(f.shape), dtype=torch.int64)
        s = stats64(f)
        t[f"layer{i + 1}_stats"] = torch.tensor([s[0], s[1], max(abs(s[2]), abs(s[3])), s[2], s[3]], dtype=torch.float64)
        cs = 8 if i < 2 else 4
        t[f"layer{i + 1}_crop"] = f[0, :, 0:cs, 0:cs].clone()

    # -- FPN
    fpn = rec["fpn"]
    fpn_doc = {}
    for i, k in enumerate(["0", "1", "2", "3", "pool"]):
        f = fpn[k]
        key = f"fpn_{k}" if k == "pool" else f"fpn_{i}"
        fh, fw = f.shape[-2:]
        t[f"{key}_shape"] = torch.tensor(list(f.shape), dtype=torch.int64)
        t[f"{key}_stats"] = per_channel_stats(f)
        size = min(16, fh, fw)
        offs = crop_offsets(fh, fw, size, seed=100 + i, n_random=1)
        crops = torch.stack([f[0, :, y : y + size, x0 : x0 + size] for (y, x0) in offs])
        t[f"{key}_crops"] = crops.contiguous()
        t[f"{key}_crop_offsets"] = torch.tensor(offs, dtype=torch.int64)
        fpn_doc[key] = {"shape": list(f.shape), "crop": size, "crop_offsets_yx": offs}
        if k == "pool":
            t["fpn_pool"] = f[0].clone()  # small: keep whole
    doc["fpn"] = fpn_doc

    # -- RPN head raw outputs (stats per level) and proposals
    logits, deltas = rec["rpn_head"]
    t["rpn_objectness_stats"] = torch.tensor([stats64(o) for o in logits], dtype=torch.float64)
    t["rpn_deltas_stats"] = torch.tensor([stats64(d) for d in deltas], dtype=torch.float64)
    t["rpn_objectness_crop_l4"] = logits[-1][0].clone()  # pool level, whole [3,h,w]
    boxes, scores = rec["proposals"]
    t["proposals"] = boxes[0].clone()
    t["proposal_scores"] = scores[0].clone()

    # -- box branch (rows = proposals in the order above)
    t["box_roi_pool_first4"] = rec["box_roi_pool"][:4].clone()
    t["box_roi_pool_stats"] = torch.tensor(stats64(rec["box_roi_pool"]), dtype=torch.float64)
    t["box_head_first64"] = rec["box_head"][:64].clone()
    cl, br = rec["box_predictor"]
    t["class_logits_first64"] = cl[:64].clone()
    t["box_regression_first32"] = br[:32].clone()
    t["class_logits_stats"] = torch.tensor(stats64(cl), dtype=torch.float64)

    # -- detections per threshold
    det_doc = {}
    for tag in ("s005", "s000"):
        out = results[tag]
        r = recs[tag]
        pre = r["pre_paste"][0]
        n = out["boxes"].shape[0]
        t[f"{tag}.boxes"] = out["boxes"].clone()
        t[f"{tag}.scores"] = out["scores"].clone()
        t[f"{tag}.labels"] = out["labels"].clone()
        t[f"{tag}.boxes_resized"] = pre["boxes"].clone()  # before transform.postprocess (resized coords)
        t[f"{tag}.mask_probs_28"] = pre["masks"].clone()  # [N,1,28,28] sigmoid of the label's logits
        masks = out["masks"]  # [N,1,H,W] pasted probabilities
        bin_ = masks[:, 0] > 0.5
        t[f"{tag}.mask_area"] = bin_.flatten(1).sum(1).to(torch.int64)
        t[f"{tag}.mask_sum"] = masks[:, 0].double().flatten(1).sum(1)
        near = ((masks[:, 0] - 0.5).abs() < 1e-3).flatten(1).sum(1).to(torch.int64)
        t[f"{tag}.mask_near_half"] = near
        if tag == "s005" and "mask_roi_pool" in r and r["mask_roi_pool"].shape[0] > 0:
            t[f"{tag}.mask_roi_pool_first2"] = r["mask_roi_pool"][:2].clone()
        crops_doc = []
        for j in range(min(3, n) if tag == "s005" else 0):
            ys, xs = torch.nonzero(bin_[j], as_tuple=True)
            if ys.numel() == 0:
                crops_doc.append(None)
                continue
            y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
            t[f"{tag}.mask{j}_crop"] = bin_[j, y0:y1, x0:x1].to(torch.uint8).contiguous()
            t[f"{tag}.mask{j}_crop_yxyx"] = torch.tensor([y0, x0, y1, x1], dtype=torch.int64)
            crops_doc.append([y0, x0, y1, x1])
        s = out["scores"]
        det_doc[tag] = {
            "box_score_thresh": 0.05 if tag == "s005" else 0.0,
            "num_detections": n,
            "labels_histogram": {str(k): int(v) for k, v in collections.Counter(out["labels"].tolist()).items()},
            "max_score": float(s.max()) if n else None,
            "min_score": float(s.min()) if n else None,
            "top3_mask_crop_yxyx": crops_doc if tag == "s005" else "not stored (same first detections as s005)",
        }
    doc["detections"] = det_doc
    doc["image_size_hw"] = [H, W]
    doc["resized_hw"] = [int(rh), int(rw)]
    doc["batch_hw"] = [int(Hp), int(Wp)]
    doc["num_proposals"] = int(t["proposals"].shape[0])
    doc["stage_stats_mean_std_absmax"] = {
        f"layer{i}": t[f"layer{i}_stats"][:3].tolist() for i in range(1, 5)
    }
    # closest class score (over all 1000x90 proposal-class pairs) to the 0.05 threshold
    probs = torch.softmax(cl, -1)[:, 1:]
    doc["closest_score_to_0.05"] = float(probs.flatten()[(probs.flatten() - 0.05).abs().argmin()])
    return t, doc


def save_st(tensors, path, metadata=None):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    Path(path).chmod(0o644)


def cmd_fixtures(a):
    import torch
    import torchvision

    torch.set_num_threads(a.threads)
    out = resolve(a.out)
    out.mkdir(parents=True, exist_ok=True)
    data = resolve(a.data)

    # ---------------- A: narrow model
    for name, rel in NARROW_CASES:
        if not (data / rel).exists():
            sys.exit(f"missing data file: {data / rel}")
    images = {name: load_rgb(data / rel, a.pedcache) for name, rel in NARROW_CASES}
    model = build_narrow(to_input(images[NARROW_CASES[0][0]]))
    sd = state_dict_clean(model)
    nparams = sum(v.numel() for v in sd.values())
    log(f"narrow model: {len(sd)} tensors, {nparams} values ({nparams * 4 / 1e6:.2f} MB f32)")
    save_st(sd, out / "narrow_weights.safetensors", metadata={"format": "pt", "source": "torch_reference.py"})
    old = collections.OrderedDict((new_to_old_key(k), v) for k, v in sd.items())
    assert len(old) == len(sd)
    # plain dict (no _metadata): torchvision treats it as version < 2 and renames on load
    torch.save(dict(old), out / "narrow_weights_oldnames.pth")
    (out / "narrow_weights_oldnames.pth").chmod(0o644)
    if a.keep_new_pth:
        torch.save(model.state_dict(), out / "narrow_weights.pth")
    else:
        (out / "narrow_weights.pth").unlink(missing_ok=True)
    # check the old-name file loads into a fresh model through torchvision's own conversion
    fresh = build_narrow()
    with torch.no_grad():
        for p in list(fresh.parameters()) + list(fresh.buffers()):
            p.zero_()
    missing, unexpected = fresh.load_state_dict(
        torch.load(out / "narrow_weights_oldnames.pth", weights_only=True), strict=True
    )
    assert not missing and not unexpected
    for k, v in state_dict_clean(fresh).items():
        assert torch.equal(v, sd[k]), k
    log("old-name .pth reloads through torchvision's version<2 key conversion: ok")

    cap = Capture(model)
    cases = []
    for name, rel in NARROW_CASES:
        src = data / rel
        rgb = images[name]
        t0 = time.time()
        tensors, doc = narrow_case(model, cap, rgb, name)
        fn = f"narrow_{name}.safetensors"
        save_st(tensors, out / fn)
        size = (out / fn).stat().st_size
        log(f"{name}: {time.time() - t0:.1f}s, {size / 1e6:.2f} MB, dets s005={doc['detections']['s005']['num_detections']}"
            f" s000={doc['detections']['s000']['num_detections']}")
        doc.update({
            "name": name,
            "source": rel,
            "decoded_by": "pil" if src.suffix.lower() == ".png" else "pedcache decode",
            "file": fn,
            "keys": {k: [str(v.dtype).replace("torch.", ""), list(v.shape)] for k, v in tensors.items()},
        })
        cases.append(doc)

    # ---------------- B: full-width deterministic
    full = fullwidth_stats(data / FULLWIDTH_CASE, a.pedcache)
    full["source"] = FULLWIDTH_CASE
    (out / "fullwidth_stats.json").write_text(json.dumps(full, indent=1) + "\n")

    manifest = {
        "generator": "scripts/torch_reference.py fixtures",
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "threads": a.threads,
        "input": "rgb uint8 HWC -> torch.from_numpy(x).permute(2,0,1).float() / 255, one image per batch",
        "pixels": "PNG read with PIL convert('RGB'); JPEG decoded by `pedcache decode` then read as PNG",
        "narrow": {
            "architecture": NARROW,
            "maskrcnn_args": "torchvision MaskRCNN defaults (= maskrcnn_resnet50_fpn): min_size 800, max_size 1333, "
            "image_mean [0.485,0.456,0.406], image_std [0.229,0.224,0.225], anchors ((32,),(64,),(128,),(256,),(512,)) x "
            "(0.5,1,2), rpn pre/post nms top-n test 1000/1000, rpn nms 0.7, rpn score_thresh 0, box_score_thresh 0.05, "
            "box_nms_thresh 0.5, detections_per_img 100, RoIAlign box 7x7 / mask 14x14 sampling_ratio 2 (aligned=False), "
            "bbox_reg_weights (10,10,5,5)",
            "norm": "FrozenBatchNorm2d everywhere in the body, eps overwritten to 0.0 (as for COCO_V1)",
            "backbone": "BackboneWithFPN(return_layers layer1..4 -> '0'..'3', in_channels_list "
            f"{NARROW['stage_out_channels']}, out_channels {NARROW['fpn_out_channels']}, LastLevelMaxPool, norm_layer=None)",
            "init": f"torch.manual_seed({SEED}) then torchvision's own init; FrozenBN buffers from "
            f"torch.Generator().manual_seed({SEED + 1}): weight U(0.5,1.5), bias 0.1*N(0,1), running_mean 0.1*N(0,1), "
            f"running_var U(0.5,2.0); then rpn.head.cls_logits.weight *= {RPN_CLS_SCALE}, "
            f"mask_fcn_logits.weight *= {MASK_LOGITS_SCALE}; finally (calibration on {NARROW_CASES[0][1]}) "
            f"cls_score.weight *= {CLS_SCORE_SCALE}, cls_score.bias = -{CLS_SCORE_SCALE} * W0 @ mean(box_head output "
            f"over that image's 1000 proposals) (float64, then f32) + {CLS_BIAS_ADD} (class: added value)",
            "num_tensors": len(sd),
            "num_values": nparams,
            "weights": {
                "narrow_weights.safetensors": "model.state_dict() names (torchvision 0.29, version-2 names), f32",
                "narrow_weights_oldnames.pth": "same tensors, torch.save zip pickle of a plain dict with the OLD "
                "(pre-version-2) names used by the published maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth; verified to load "
                "strictly into torchvision via its _load_from_state_dict renaming",
                "narrow_weights.pth": "torch.save(model.state_dict()) (new names)" if a.keep_new_pth else "not kept",
            },
        },
        "old_to_new_key_mapping": OLD_NEW_MAPPING,
        "old_to_new_key_mapping_source": "torchvision/ops/feature_pyramid_network.py FeaturePyramidNetwork."
        "_load_from_state_dict, models/detection/rpn.py RPNHead._load_from_state_dict, models/detection/mask_rcnn.py "
        "MaskRCNNHeads._load_from_state_dict: applied when the state dict has no version-2 _metadata",
        "case_file_contents": CASE_KEYS_DOC,
        "cases": cases,
        "fullwidth": "fullwidth_stats.json",
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    total = sum(p.stat().st_size for p in out.iterdir())
    log(f"wrote {out} ({total / 1e6:.2f} MB)")


CASE_KEYS_DOC = {
    "input_size / image_sizes / batch_size_hw": "int64 [2]: original HxW, resized (unpadded) HxW, padded batch HxW",
    "transformed_stats": "f32 [3,4] per channel mean, std (ddof 0), min, max of the padded batch tensor (float64 accum.)",
    "transformed_stats_valid": "same over the unpadded [:rh,:rw] region",
    "transformed_crop": "f32 [3,32,32] batch[0,:,0:32,0:32]",
    "transformed_crop_centre": "f32 [3,32,32] at transformed_crop_centre_offset (y,x) = (Hp//2-16, Wp//2-16)",
    "transformed_crop_br": "f32 [3,h,w] batch[0,:,y:y+32,x:x+32] (clipped to the batch) at transformed_crop_br_offset "
    "(y,x) = (rh-16, rw-16): the last 16 valid rows/cols of the resized image plus the zero padding after them",
    "stem_stats": "f64 [4] mean,std,min,max of body maxpool output; stem_crop f32 [64,8,8] at (0,0)",
    "layerN_shape / layerN_stats / layerN_crop": "int64 [4]; f64 [5] mean, std, absmax, min, max; f32 [C,8,8] "
    "(layer1, layer2) or [C,4,4] (layer3, layer4) at (0,0)",
    "fpn_K_shape / fpn_K_stats / fpn_K_crops / fpn_K_crop_offsets": "K in 0..3 and 'pool'; int64 [4]; f32 [C,4] per "
    "channel mean,std,min,max; f32 [3,C,s,s] crops (s = min(16,h,w)) at int64 [3,2] (y,x): (0,0), centre "
    "(h//2-s//2, w//2-s//2), one seeded (numpy default_rng(100+level), level 0..4) position",
    "fpn_pool": "f32 [C,h,w] the whole LastLevelMaxPool output",
    "rpn_objectness_stats / rpn_deltas_stats": "f64 [5,4] per level (mean,std,min,max) of RPNHead cls_logits / bbox_pred",
    "rpn_objectness_crop_l4": "f32 [3,h,w] RPNHead objectness logits of the pool level (whole)",
    "proposals / proposal_scores": "f32 [1000,4] x1y1x2y2 in resized-image coords, f32 [1000] sigmoid(objectness), "
    "output of rpn.filter_proposals in its order (batched_nms keep order = descending score)",
    "box_roi_pool_first4": "f32 [4,C,7,7] MultiScaleRoIAlign output for the first 4 proposals; box_roi_pool_stats "
    "f64 [4] over all 1000",
    "box_head_first64 / class_logits_first64 / box_regression_first32": "f32 [64,rep] / [64,91] / [32,364] for "
    "the first proposals; class_logits_stats f64 [4] over all 1000",
    "sXXX.*": "s005 = box_score_thresh 0.05 (default), s000 = box_score_thresh 0.0",
    "sXXX.boxes / scores / labels": "f32 [N,4] (original image coords), f32 [N], int64 [N]: the model's output",
    "sXXX.boxes_resized": "f32 [N,4] boxes before transform.postprocess (resized-image coords)",
    "sXXX.mask_probs_28": "f32 [N,1,28,28] sigmoid mask of the detection's label, before paste",
    "sXXX.mask_area / mask_sum / mask_near_half": "int64 [N] pixels > 0.5 of the pasted full-size mask, f64 [N] sum of "
    "pasted probabilities, int64 [N] pixels with |p-0.5| < 1e-3 (how fragile mask_area is)",
    "s005.mask_roi_pool_first2": "f32 [2,C,14,14] mask MultiScaleRoIAlign output for the first 2 detections",
    "s005.maskJ_crop / maskJ_crop_yxyx": "uint8 [h,w] 0/1 (pasted prob > 0.5) cropped to its bounding box "
    "[y0,x0,y1,x1) (int64 [4], exclusive end, original-image pixels) for detections J = 0,1,2 (s005 only: the "
    "first detections are the same in s000)",
}


# ----------------------------------------------------------------------------- fixtures (B)

FORMULA = {
    "k": "row-major flat index of the element inside its tensor (k = 0, 1, ...); the same k sequence restarts "
    "for every tensor (no per-tensor phase: phi_n = 0)",
    "conv weight (Conv2d and ConvTranspose2d, 4-D shape [d0,d1,d2,d3])": "a * S(k), a = 0.5 * sqrt(2 / (d1*d2*d3))",
    "linear weight (2-D shape [out,in])": "a * S(k), a = 0.5 * sqrt(2 / in)",
    "conv / linear bias": "0.01 * sin(k)",
    "FrozenBatchNorm2d weight": "1 + 0.1 * sin(k)",
    "FrozenBatchNorm2d bias": "0.1 * cos(k)",
    "FrozenBatchNorm2d running_mean": "0.05 * sin(0.5 k)",
    "FrozenBatchNorm2d running_var": "1 + 0.2 * |sin(0.3 k)|",
    "S(k), variant 'sin'": "sin(0.37 k)",
    "S(k), variant 'hash'": "sqrt(1.5) * (2 u(k) - 1) (uniform on [-sqrt(1.5), sqrt(1.5)]: variance 1/2, "
    "the same as sin): u(k) = (z >> 11) * 2^-53 with z = splitmix64 finalizer of k, all in wrapping u64: "
    "z = (k + 1) * 0x9E3779B97F4A7C15; z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9; z = (z ^ (z >> 27)) * "
    "0x94D049BB133111EB; z = z ^ (z >> 31)",
    "why two variants": "with 'sin' the weights of one output row are a sinusoid, so a conv over (positive, "
    "post-ReLU) inputs nearly cancels: FPN outputs are dominated by the conv biases (weak check of the convs). "
    "'hash' weights are decorrelated and every layer's output depends on its weights.",
    "evaluation": "computed in float64 (numpy: k = arange(n) as float64 for sin, as uint64 for the hash; np.sin), "
    "then rounded to float32",
    "eps": "FrozenBatchNorm2d eps = 0 (overwrite_eps(model, 0.0), as for COCO_V1)",
}


def hash_uniform(n):
    """u(k) in [0,1) for k = 0..n-1: splitmix64 finalizer of k+1, top 53 bits (exact in float64)."""
    with np.errstate(over="ignore"):
        z = np.arange(n, dtype=np.uint64) + np.uint64(1)
        z = z * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * (2.0 ** -53)


def deterministic_value(kind, shape, variant="sin"):
    n = int(np.prod(shape)) if len(shape) else 1
    k = np.arange(n, dtype=np.float64)
    if kind in ("conv_w", "lin_w"):
        fan_in = shape[1] * shape[2] * shape[3] if kind == "conv_w" else shape[1]
        a = 0.5 * math.sqrt(2.0 / fan_in)
        if variant == "sin":
            v = a * np.sin(0.37 * k)
        elif variant == "hash":
            v = a * (math.sqrt(1.5) * (2.0 * hash_uniform(n) - 1.0))
        else:
            raise ValueError(variant)
    elif kind == "bias":
        v = 0.01 * np.sin(k)
    elif kind == "bn_w":
        v = 1.0 + 0.1 * np.sin(k)
    elif kind == "bn_b":
        v = 0.1 * np.cos(k)
    elif kind == "bn_rm":
        v = 0.05 * np.sin(0.5 * k)
    elif kind == "bn_rv":
        v = 1.0 + 0.2 * np.abs(np.sin(0.3 * k))
    else:
        raise ValueError(kind)
    return v.astype(np.float32).reshape(shape)


def set_deterministic(model, variant="sin"):
    import torch
    from torch import nn
    from torchvision.ops import FrozenBatchNorm2d

    done = set()
    with torch.no_grad():
        for mname, m in model.named_modules():
            p = f"{mname}." if mname else ""
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                kind = "lin_w" if isinstance(m, nn.Linear) else "conv_w"
                m.weight.copy_(torch.from_numpy(deterministic_value(kind, tuple(m.weight.shape), variant)))
                done.add(p + "weight")
                if m.bias is not None:
                    m.bias.copy_(torch.from_numpy(deterministic_value("bias", tuple(m.bias.shape))))
                    done.add(p + "bias")
            elif isinstance(m, FrozenBatchNorm2d):
                for attr, kind in (("weight", "bn_w"), ("bias", "bn_b"), ("running_mean", "bn_rm"), ("running_var", "bn_rv")):
                    getattr(m, attr).copy_(torch.from_numpy(deterministic_value(kind, tuple(getattr(m, attr).shape))))
                    done.add(p + attr)
    left = set(state_dict_clean(model)) - done
    assert not left, left
    return len(done)


def fullwidth_stats(src, pedcache):
    import torch
    import torchvision

    model = build_fullwidth()
    # the key set equals maskrcnn_resnet50_fpn(weights=None)'s minus num_batches_tracked
    ref = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    assert set(state_dict_clean(model)) == set(state_dict_clean(ref))
    del ref
    rgb = load_rgb(src, pedcache)
    x = to_input(rgb)

    def st(t):
        s = stats64(t)
        return {"shape": list(t.shape), "mean": s[0], "std": s[1], "absmax": max(abs(s[2]), abs(s[3])), "min": s[2], "max": s[3]}

    res = {
        "model": "maskrcnn_resnet50_fpn as built for COCO_V1 (resnet50 with FrozenBatchNorm2d, _resnet_fpn_extractor(., 3), "
        "MaskRCNN(num_classes=91), overwrite_eps(0.0)); same state_dict keys as maskrcnn_resnet50_fpn(weights=None) "
        "minus num_batches_tracked",
        "formula": FORMULA,
        "input_size_hw": list(rgb.shape[:2]),
        "stats": "float64 accumulation; std is the population std (ddof 0); absmax = max |x|",
        "variants": {},
    }
    for variant in ("sin", "hash"):
        ntensors = set_deterministic(model, variant)
        rec = {}
        hook = model.backbone.body.maxpool.register_forward_hook(lambda m, i, o: rec.__setitem__("stem", o))
        t0 = time.time()
        with torch.no_grad():
            images, _ = model.transform([x])
            feats_body = model.backbone.body(images.tensors)
            feats = model.backbone.fpn(feats_body)
            proposals, _ = model.rpn(images, feats)
        hook.remove()
        log(f"fullwidth {variant}: {time.time() - t0:.1f}s")
        sd = state_dict_clean(model)
        # a few weight values so a port can check its formula implementation directly
        probes = {}
        for name in ["backbone.body.conv1.weight", "backbone.body.bn1.running_var", "backbone.body.layer1.0.bn3.bias",
                     "backbone.fpn.inner_blocks.0.0.weight", "rpn.head.conv.0.0.bias", "roi_heads.box_head.fc6.weight",
                     "roi_heads.mask_predictor.conv5_mask.weight"]:
            v = sd[name].flatten()
            ks = [0, 1, 2, 1000 % v.numel(), v.numel() - 1]
            probes[name] = {"shape": list(sd[name].shape), "k": ks, "values": [float(v[i]) for i in ks],
                            "sum_f64": float(sd[name].double().sum())}
        res["num_tensors"] = ntensors
        res["transformed_size_hw"] = [int(v) for v in images.image_sizes[0]]
        res["batch_shape"] = list(images.tensors.shape)
        res["transformed"] = st(images.tensors)
        res["variants"][variant] = {
            "weight_probes": probes,
            "stem": st(rec["stem"]),
            "body": {f"layer{i + 1}": st(feats_body[k]) for i, k in enumerate(["0", "1", "2", "3"])},
            "fpn": {k: st(v) for k, v in feats.items()},
            "num_proposals": int(proposals[0].shape[0]),
            "proposals_stats": st(proposals[0]),
            "first_proposals": proposals[0][:5].tolist(),
        }
    return res


# ----------------------------------------------------------------------------- bench


def cmd_bench(a):
    import torch
    import torchvision

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = build_fullwidth()
    m = model
    rgb = load_rgb(resolve(a.image), a.pedcache)
    x = to_input(rgb)

    marks = {}

    def mark(name):
        def f(*_args):
            marks[name] = time.perf_counter()

        return f

    H = []
    def pre(mod, name):
        H.append(mod.register_forward_pre_hook(mark(name + ":start")))

    def post(mod, name):
        H.append(mod.register_forward_hook(mark(name + ":end")))

    body = m.backbone.body
    pre(m.transform, "transform"); post(m.transform, "transform")
    pre(body.conv1, "stem"); post(body.maxpool, "stem")
    for i in range(1, 5):
        pre(getattr(body, f"layer{i}"), f"layer{i}"); post(getattr(body, f"layer{i}"), f"layer{i}")
    pre(m.backbone.fpn, "fpn"); post(m.backbone.fpn, "fpn")
    pre(m.rpn, "rpn"); post(m.rpn, "rpn")
    pre(m.roi_heads, "roi_heads"); post(m.roi_heads, "roi_heads")
    pre(m.roi_heads.mask_roi_pool, "masks")
    orig_post = m.transform.postprocess

    def postprocess(*args):
        marks["paste:start"] = time.perf_counter()
        r = orig_post(*args)
        marks["paste:end"] = time.perf_counter()
        return r

    m.transform.postprocess = postprocess

    def once():
        marks.clear()
        t0 = time.perf_counter()
        with torch.no_grad():
            out = model([x])
        t1 = time.perf_counter()
        d = {
            "transform": marks["transform:end"] - marks["transform:start"],
            "stem": marks["stem:end"] - marks["stem:start"],
        }
        for i in range(1, 5):
            d[f"layer{i}"] = marks[f"layer{i}:end"] - marks[f"layer{i}:start"]
        d["body"] = marks["layer4:end"] - marks["stem:start"]
        d["fpn"] = marks["fpn:end"] - marks["fpn:start"]
        d["rpn"] = marks["rpn:end"] - marks["rpn:start"]
        mstart = marks.get("masks:start", marks["roi_heads:end"])
        d["roi_box"] = mstart - marks["roi_heads:start"]
        d["roi_masks"] = marks["roi_heads:end"] - mstart
        d["paste_masks"] = marks["paste:end"] - marks["paste:start"]
        d["total"] = t1 - t0
        return d, int(out[0]["boxes"].shape[0])

    results = {}
    for tag, thr in (("box_score_thresh_0.05", 0.05), ("box_score_thresh_0.0", 0.0)):
        m.roi_heads.score_thresh = thr
        once()  # warm-up
        runs = []
        ndet = None
        for _ in range(a.runs):
            d, ndet = once()
            runs.append(d)
        results[tag] = {
            "num_detections": ndet,
            "median_s": {k: statistics.median(r[k] for r in runs) for k in runs[0]},
            "runs": a.runs,
        }
        log(tag, json.dumps(results[tag]["median_s"]))
    for h in H:
        h.remove()
    res = {
        "model": "maskrcnn_resnet50_fpn (COCO_V1 architecture, FrozenBN eps 0), random torchvision init (seed 0)",
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "threads": a.threads,
        "image": str(a.image),
        "input_hw": list(rgb.shape[:2]),
        "note": "median of N runs after 1 warm-up, eager, CPU, torch.no_grad; roi_box includes box RoIAlign, "
        "TwoMLPHead, predictor and postprocess_detections (softmax, decode, NMS); roi_masks = mask RoIAlign + "
        "mask head + predictor + maskrcnn_inference; paste_masks = transform.postprocess (box rescale + "
        "paste_masks_in_image). num_detections says how many RoIs the mask branch ran on; the 0.0 run also "
        "shows postprocess_detections (per-class batched NMS) on ~90k candidates instead of those above 0.05. "
        "The machine's cores may be shared: compare stages within one run.",
        "results": results,
    }
    js = json.dumps(res, indent=1)
    print(js)
    if a.json:
        Path(a.json).write_text(js + "\n")


# ----------------------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    def common(p):
        p.add_argument("--pedcache", default="target/release/pedcache",
                       help="project binary used to decode JPEGs (relative to the repo root)")

    p = sub.add_parser("fixtures", help="write tests/fixtures/maskrcnn_tv")
    common(p)
    p.add_argument("--data", default="../shared/data", help="shared test data root")
    p.add_argument("--out", default="tests/fixtures/maskrcnn_tv")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--keep-new-pth", action="store_true",
                   help="also write narrow_weights.pth with the new names (same tensors as the safetensors)")
    p.set_defaults(fn=cmd_fixtures)

    p = sub.add_parser("bench", help="PyTorch eager per-stage timing of maskrcnn_resnet50_fpn")
    common(p)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--image", required=True, help="a 2048x1024 frame (JPEG via pedcache decode, or PNG)")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--json", default=None)
    p.set_defaults(fn=cmd_bench)

    a = ap.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
