#!/usr/bin/env python3
"""Reference outputs of the torchvision ops that the candle Mask R-CNN port reimplements.

Writes small safetensors files into tests/fixtures/tv_ops/ (tensors + string metadata, the
metadata values are JSON). The Rust tests in src/detect/ops/{roi_align,anchors,tv_boxes,interp,
paste}.rs compare against them. Run with the venv of scripts/make_torch_venv.sh (torch 2.14.1,
torchvision 0.29.1), on CPU:

    "$(scripts/make_torch_venv.sh | tail -1)" scripts/torch_ops_reference.py [--out DIR]

Everything is seeded; rerunning with the same versions on an x86-64 CPU with AVX2 gives identical
tensors and metadata (only the order of keys in the file header may change).
"""

import argparse
import json
import os
from collections import OrderedDict

import torch
import torch.nn.functional as F
import torchvision
from safetensors.torch import save_file
from torchvision.models.detection._utils import BoxCoder
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import paste_masks_in_image
from torchvision.models.detection.transform import _resize_image_and_masks, resize_boxes
from torchvision.ops import MultiScaleRoIAlign, batched_nms, nms, roi_align
from torchvision.ops.boxes import clip_boxes_to_image, remove_small_boxes
from torchvision.ops.poolers import _infer_scale

torch.set_num_threads(1)


def save(out_dir, name, tensors, meta):
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    meta = {k: json.dumps(v) for k, v in meta.items()}
    meta["torch"] = json.dumps(torch.__version__)
    meta["torchvision"] = json.dumps(torchvision.__version__)
    path = os.path.join(out_dir, f"{name}.safetensors")
    save_file(tensors, path, metadata=meta)
    print(f"{path}: {os.path.getsize(path)} bytes")


def roi_align_fixture(out_dir):
    g = torch.Generator().manual_seed(0)
    feat = torch.randn(2, 3, 13, 17, generator=g)
    # (batch, x1, y1, x2, y2) in image pixels; the maps are 1/4 (52x68 px) or 1/8 (104x136 px).
    rois = torch.tensor(
        [
            [0, 0.0, 0.0, 51.0, 67.0],  # whole 1/4 map
            [0, 10.3, 5.7, 30.2, 40.9],
            [1, -20.0, -15.0, 10.0, 12.0],  # partly outside, top-left
            [1, 40.0, 30.0, 90.0, 80.0],  # partly outside, bottom-right (1/4)
            [0, 70.0, 60.0, 100.0, 90.0],  # outside the 1/4 map, inside the 1/8 one
            [0, -50.0, -40.0, -10.0, -5.0],  # entirely outside (negative)
            [1, 12.2, 13.1, 12.9, 13.4],  # tiny
            [0, 20.0, 20.0, 20.0, 20.0],  # zero size
            [1, 33.3, 2.2, 28.8, 9.9],  # x2 < x1
            [0, 3.7, 44.1, 63.9, 51.9],  # wide and thin
            [1, 0.0, 0.0, 135.9, 103.9],  # the whole 1/8 map
            [0, 62.5, 46.5, 68.5, 52.5],  # at the last row/column (snapping)
            [1, -4.0, -4.0, 4.0, 4.0],  # samples near -1
        ],
        dtype=torch.float32,
    )
    tensors = {"feat": feat, "rois": rois}
    cases = []
    configs = [(inv, sr, a, 5, 5) for inv in (4, 8) for sr in (2, 0) for a in (0, 1)]
    configs += [(4, 2, 0, 7, 7), (8, -1, 1, 4, 3), (4, 3, 1, 3, 6)]
    for inv, sr, a, oh, ow in configs:
        out = roi_align(feat, rois, (oh, ow), spatial_scale=1.0 / inv, sampling_ratio=sr, aligned=bool(a))
        tensors[f"out_s{inv}_sr{sr}_a{a}_{oh}x{ow}"] = out
        cases += [inv, sr + 1, a, oh, ow]
    save(out_dir, "roi_align", tensors, {"cases": cases})


def multiscale_fixture(out_dir):
    g = torch.Generator().manual_seed(1)
    image_size = (60, 90)  # unpadded; the batch is padded to 64x96
    shapes = [(16, 24), (8, 12), (4, 6), (2, 3)]
    feats = OrderedDict((str(i), torch.randn(1, 2, h, w, generator=g)) for i, (h, w) in enumerate(shapes))
    # Box sides around the level boundaries (sqrt(area) = 112, 224, 448 switch levels).
    boxes = torch.tensor(
        [
            [5.0, 6.0, 9.0, 10.0],
            [10.0, 3.0, 30.0, 23.0],
            [0.0, 0.0, 111.9, 112.0],
            [0.0, 0.0, 112.0, 112.0],
            [-20.0, -10.0, 92.1, 102.0],
            [1.5, 2.5, 151.5, 152.5],
            [30.0, 10.0, 254.0, 234.0],
            [12.0, 4.0, 88.0, 56.0],
            [-100.0, -100.0, 348.0, 348.0],
            [40.0, 30.0, 740.0, 530.0],
            [33.0, 20.0, 33.0, 40.0],  # zero area
            [3.3, 44.4, 85.5, 58.8],
        ],
        dtype=torch.float32,
    )
    tensors = {f"feat_{i}": f for i, f in enumerate(feats.values())}
    tensors["rois"] = boxes
    for oh, sr in ((7, 2), (14, 2), (7, 0)):
        pooler = MultiScaleRoIAlign(["0", "1", "2", "3"], oh, sr)
        out = pooler(feats, [boxes], [image_size])
        tensors[f"out_{oh}_sr{sr}"] = out
    tensors["levels"] = pooler.map_levels([boxes])
    tensors["scales"] = torch.tensor(pooler.scales, dtype=torch.float32)
    pairs = [(200, 272, 800, 1066), (13, 17, 800, 1066), (16, 24, 60, 90), (15, 24, 60, 90),
             (3, 3, 64, 64), (5, 5, 64, 64), (11, 11, 64, 64), (167, 334, 666, 1333), (7, 7, 10, 10)]
    scales = [_infer_scale(torch.zeros(1, 1, a, b), [c, d]) for a, b, c, d in pairs]
    tensors["infer_scales"] = torch.tensor(scales, dtype=torch.float32)
    meta = {"image_size": list(image_size), "infer_pairs": [v for p in pairs for v in p]}
    save(out_dir, "multiscale", tensors, meta)


def anchors_fixture(out_dir):
    gen = AnchorGenerator(((32,), (64,), (128,), (256,), (512,)), ((0.5, 1.0, 2.0),) * 5)
    tensors = {}
    meta = {"cases": [0, 1]}
    cases = [
        ((64, 96), [(16, 24), (8, 12), (4, 6), (2, 3), (1, 2)], [0, 1, 2, 3, 4]),
        ((800, 1088), [(200, 272), (100, 136), (50, 68), (25, 34), (13, 17)], [4]),
    ]
    for case, (img, grids, keep_levels) in enumerate(cases):
        images = ImageList(torch.zeros(1, 3, *img), [img])
        fmaps = [torch.zeros(1, 1, h, w) for h, w in grids]
        anchors = gen(images, fmaps)[0]
        per = [h * w * 3 for h, w in grids]
        for level, chunk in enumerate(torch.split(anchors, per)):
            if level in keep_levels:
                tensors[f"anchors_{case}_{level}"] = chunk
        meta[f"image_{case}"] = list(img)
        meta[f"grids_{case}"] = [v for g in grids for v in g]
        meta[f"levels_{case}"] = keep_levels
    for level, cell in enumerate(gen.cell_anchors):
        tensors[f"cell_{level}"] = cell
    save(out_dir, "anchors", tensors, meta)


def boxes_fixture(out_dir):
    g = torch.Generator().manual_seed(2)
    n = 48
    xy = torch.rand(n, 2, generator=g) * 250 - 50
    wh = torch.rand(n, 2, generator=g) * 300 + 0.5
    anchors = torch.cat([xy, xy + wh], dim=1)
    rel1 = torch.randn(n, 4, generator=g) * 0.5
    rel1[0, 2] = 10.0  # dw above the clamp
    rel1[1, 3] = 50.0
    rel1[2, 2:] = torch.tensor([1000.0, 4.2])
    rel1[3, 2:] = torch.tensor([-20.0, -30.0])  # no lower clamp
    rel1[4, :2] = torch.tensor([-3.0, 3.0])
    rel10 = torch.randn(n, 4, generator=g) * 3.0
    rel10[0, 2] = 30.0
    rel10[1, 3] = 100.0
    rel10[2, 2:] = torch.tensor([20.0, 21.0])  # 20 / 5 = 4.0, just under the clamp
    tensors = {"anchors": anchors, "rel_w1": rel1, "rel_w10": rel10}
    tensors["decoded_w1"] = BoxCoder((1.0, 1.0, 1.0, 1.0)).decode_single(rel1, anchors)
    tensors["decoded_w10"] = BoxCoder((10.0, 10.0, 5.0, 5.0)).decode_single(rel10, anchors)
    clip_h, clip_w = 120, 160
    clipped = clip_boxes_to_image(tensors["decoded_w1"], (clip_h, clip_w))
    tensors["clipped"] = clipped
    min_size = 1e-3
    tensors["small_keep"] = remove_small_boxes(clipped, min_size)
    tensors["resized"] = resize_boxes(clipped, (clip_h, clip_w), (397, 533))
    meta = {"clip_h": clip_h, "clip_w": clip_w, "min_size": min_size,
            "resize_from": [clip_h, clip_w], "resize_to": [397, 533]}
    save(out_dir, "boxes", tensors, meta)


def nms_fixture(out_dir):
    tensors = {}
    # Set 0, by hand: duplicates, equal scores, the same box in two classes, IoU exactly 0.5.
    b0 = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],
            [0.0, 0.0, 10.0, 10.0],
            [0.0, 0.0, 10.0, 5.0],
            [1.0, 1.0, 11.0, 11.0],
            [20.0, 20.0, 30.0, 30.0],
            [20.0, 20.0, 30.0, 30.0],
            [21.0, 20.0, 31.0, 30.0],
            [0.0, 0.0, 10.0, 10.0],
            [5.0, 0.0, 15.0, 10.0],
            [0.0, 0.0, 0.0, 0.0],
            [100.0, 100.0, 140.0, 120.0],
            [100.0, 100.0, 140.0, 120.0],
        ]
    )
    s0 = torch.tensor([0.9, 0.9, 0.8, 0.85, 0.7, 0.7, 0.75, 0.9, 0.6, 0.95, 0.5, 0.5])
    i0 = torch.tensor([0, 0, 0, 1, 2, 3, 2, 1, 0, 0, 1, 1])
    g = torch.Generator().manual_seed(3)
    sets = [(b0, s0, i0)]
    for n, k in ((300, 4), (1100, 5)):
        xy = torch.rand(n, 2, generator=g) * 200
        wh = torch.rand(n, 2, generator=g) * 60 + 1
        b = torch.cat([xy, xy + wh], dim=1)
        s = torch.rand(n, generator=g)
        i = torch.randint(0, k, (n,), generator=g)
        sets.append((b, s, i))
    for si, (b, s, i) in enumerate(sets):
        tensors[f"boxes_{si}"] = b
        tensors[f"scores_{si}"] = s
        tensors[f"idxs_{si}"] = i.to(torch.int32)
        thresholds = (("05", 0.5), ("07", 0.7), ("03", 0.3)) if si < 2 else (("05", 0.5), ("07", 0.7))
        for tag, thr in thresholds:
            tensors[f"nms_{si}_{tag}"] = nms(b, s, thr).to(torch.int32)
            tensors[f"batched_{si}_{tag}"] = batched_nms(b, s, i, thr).to(torch.int32)
    save(out_dir, "nms", tensors, {"sets": list(range(len(sets)))})


def formula_image(h, w):
    """value ((y * 131 + x * 31 + c * 97) % 256) / 255, float32; the Rust test makes the same."""
    y = torch.arange(h, dtype=torch.int64)[None, :, None]
    x = torch.arange(w, dtype=torch.int64)[None, None, :]
    c = torch.arange(3, dtype=torch.int64)[:, None, None]
    v = (y * 131 + x * 31 + c * 97) % 256
    return v.to(torch.float32) / 255.0


def interp_fixture(out_dir):
    g = torch.Generator().manual_seed(4)
    tensors = {}
    small = [((5, 7), (8, 11)), ((13, 17), (6, 9)), ((20, 30), (20, 45)), ((1, 5), (3, 9)),
             ((9, 9), (4, 4)), ((7, 3), (7, 3)), ((11, 6), (16, 5))]
    cases = []
    for k, ((h, w), (oh, ow)) in enumerate(small):
        x = torch.rand(3, h, w, generator=g)
        tensors[f"in_{k}"] = x
        tensors[f"out_{k}"] = F.interpolate(x[None], size=(oh, ow), mode="bilinear", align_corners=False)[0]
        cases += [k, h, w, oh, ow]
    meta = {"cases": cases}
    # The detection transform's resize (min 800 / max 1333, recompute_scale_factor=True).
    big = [(397, 396), (1024, 2048), (398, 500)]
    big_cases = []
    for k, (h, w) in enumerate(big):
        img = formula_image(h, w)
        out, _ = _resize_image_and_masks(img, 800, 1333)
        oh, ow = out.shape[-2:]
        rows = [1, oh // 2 + 1] if k == 0 else [oh // 2 + 1]
        tensors[f"big_out_{k}"] = out[:, rows, :]
        tensors[f"big_sum_{k}"] = out.double().sum(dim=(1, 2)).float()
        meta[f"big_rows_{k}"] = rows
        big_cases += [k, h, w, int(oh), int(ow)]
    meta["big_cases"] = big_cases
    sizes = []
    for h, w in [(397, 396), (396, 397), (1024, 2048), (480, 640), (375, 500), (398, 500), (500, 398),
                 (1080, 1920), (800, 1333), (333, 500), (427, 640), (161, 300), (700, 2143), (64, 96),
                 (1, 1), (2000, 30)]:
        out, _ = _resize_image_and_masks(torch.zeros(1, h, w), 800, 1333)
        oh, ow = (int(v) for v in out.shape[-2:])
        ph = int(-(-oh // 32) * 32)
        pw = int(-(-ow // 32) * 32)
        sizes += [h, w, oh, ow, ph, pw]
    meta["transform_sizes"] = sizes
    save(out_dir, "interp", tensors, meta)


def paste_fixture(out_dir):
    g = torch.Generator().manual_seed(5)
    img_h, img_w = 50, 70
    boxes = torch.tensor(
        [
            [10.3, 8.7, 30.6, 25.2],  # inside
            [-3.2, -5.9, 15.4, 12.8],  # over the top-left corner
            [55.5, 35.1, 70.0, 50.0],  # touching the bottom-right border
            [0.0, 20.0, 70.0, 30.0],  # full width
            [33.3, 0.0, 34.1, 49.9],  # under a pixel wide
            [40.0, 10.0, 40.0, 30.0],  # zero width
        ]
    )
    masks = torch.sigmoid(torch.randn(len(boxes), 1, 14, 14, generator=g) * 3.0)
    pasted = paste_masks_in_image(masks, boxes, (img_h, img_w), padding=1)[:, 0]
    # Store each plane cropped to the bounding box of its non-zero pixels (zeros elsewhere).
    crops, windows = [], []
    for plane in pasted:
        ys, xs = torch.nonzero(plane, as_tuple=True)
        y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
        crops.append(plane[y0:y1, x0:x1].reshape(-1))
        windows += [y0, y1, x0, x1]
    tensors = {"masks": masks[:, 0], "boxes": boxes, "pasted_crops": torch.cat(crops)}
    save(out_dir, "paste", tensors, {"image_size": [img_h, img_w], "windows": windows})


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "fixtures", "tv_ops"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    roi_align_fixture(args.out)
    multiscale_fixture(args.out)
    anchors_fixture(args.out)
    boxes_fixture(args.out)
    nms_fixture(args.out)
    interp_fixture(args.out)
    paste_fixture(args.out)


if __name__ == "__main__":
    main()
