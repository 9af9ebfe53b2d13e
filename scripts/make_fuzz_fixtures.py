#!/usr/bin/env python3
"""Write tests/fuzz fixtures: small hand-made inputs that once broke (or would break) a parser's
bounds, each named PARSER-WHAT.bin (tests/fuzz.rs `regressions` runs every one and requires a
one-line error within the parser's allocation limit). Standard library only; no third-party
data. Deterministic: rerunning rewrites identical files.

    scripts/make_fuzz_fixtures.py            # writes tests/fixtures/fuzz/
"""
import os
import struct
import zlib

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "fuzz")


def stored_zip(entries):
    """A zip of stored entries, as torch.save writes them."""
    out, central = b"", b""
    for name, data in entries:
        crc = zlib.crc32(data) & 0xFFFFFFFF
        off = len(out)
        n = name.encode()
        out += struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 0, 0, 0, crc, len(data), len(data), len(n), 0) + n + data
        central += struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, 0, 0, 0, crc, len(data), len(data), len(n), 0, 0, 0, 0, 0, off) + n
    eocd = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(central), len(out), 0)
    return out + central + eocd


def unicode(s):
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def binint(v):
    return b"J" + struct.pack("<i", v)


def tensor(name, key, numel, shape):
    """One `name: _rebuild_tensor_v2(storage, 0, shape, stride, False, OrderedDict())` item."""
    stride, acc = [], 1
    for d in reversed(shape):
        stride.insert(0, acc)
        acc *= d
    p = unicode(name) + b"ctorch._utils\n_rebuild_tensor_v2\n("
    p += b"(" + unicode("storage") + b"ctorch\nFloatStorage\n" + unicode(key) + unicode("cpu") + binint(numel) + b"tQ"
    p += binint(0) + b"(" + b"".join(binint(d) for d in shape) + b"t(" + b"".join(binint(s) for s in stride) + b"t"
    p += b"\x89ccollections\nOrderedDict\n)RtR"
    return p


def state_dict(items):
    return b"\x80\x02ccollections\nOrderedDict\n)R(" + b"".join(items) + b"u."


def pth(pickle, storages):
    entries = [("archive/data.pkl", pickle)]
    entries += [(f"archive/data/{k}", d) for k, d in storages]
    entries.append(("archive/version", b"3\n"))
    return stored_zip(entries)


def varint(v):
    out = b""
    while True:
        b = v & 0x7F
        v >>= 7
        out += bytes([b | (0x80 if v else 0)])
        if not v:
            return out


def field(num, payload):
    """A length-delimited protobuf field."""
    return varint(num << 3 | 2) + varint(len(payload)) + payload


def tensor_proto(shape, float_val):
    dims = b"".join(field(2, varint(1 << 3) + varint(d)) for d in shape)
    floats = field(5, b"".join(struct.pack("<f", v) for v in float_val))
    return varint(1 << 3) + varint(1) + field(2, dims) + floats


def attr(key, value_fields):
    return field(5, field(1, key.encode()) + field(2, value_fields))


def node(name, op, inputs=(), attrs=b""):
    b = field(1, name.encode()) + field(2, op.encode())
    b += b"".join(field(3, i.encode()) for i in inputs)
    return field(1, b + attrs)


def conv_graph(weight_shape, convs):
    """`convs` Conv2D+BiasAdd nodes under FeatureExtractor/ all reading ONE weight Const, which
    is a fill: float_val [0.5] with shape `weight_shape` (TF repeats the single value)."""
    g = node("image", "Placeholder")
    g += node("w", "Const", attrs=attr("value", field(8, tensor_proto(weight_shape, [0.5]))))
    out = weight_shape[3]
    g += node("b", "Const", attrs=attr("value", field(8, tensor_proto([out], [0.1]))))
    strides = attr("strides", field(1, field(3, b"".join(varint(1) for _ in range(4)))))
    pad = attr("padding", field(2, b"SAME"))
    prev = "image"
    for i in range(convs):
        s = f"FeatureExtractor/MobilenetV2/c{i}"
        g += node(f"{s}/Conv2D", "Conv2D", [prev, "w"], strides + pad)
        g += node(f"{s}/BiasAdd", "BiasAdd", [f"{s}/Conv2D", "b"])
        prev = f"{s}/BiasAdd"
    return g


def png_header(w, h, color=2):
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00")) + chunk(b"IEND", b"")


def jpeg_header(w, h):
    """A baseline JPEG whose frame header claims w x h (tables minimal, one byte of scan)."""
    seg = lambda m, d: b"\xff" + bytes([m]) + struct.pack(">H", len(d) + 2) + d
    dqt = seg(0xDB, b"\x00" + bytes([1] * 64))
    sof = seg(0xC0, b"\x08" + struct.pack(">HH", h, w) + b"\x01\x01\x11\x00")
    dht = seg(0xC4, b"\x00" + bytes([1] + [0] * 15) + b"\x00") + seg(0xC4, b"\x10" + bytes([1] + [0] * 15) + b"\x00")
    sos = seg(0xDA, b"\x01\x01\x00\x00\x3f\x00")
    return b"\xff\xd8" + dqt + sof + dht + sos + b"\x00" + b"\xff\xd9"


EXITS = """(
    model: "maskrcnn-r50-fpn", policy: pedestrian, tolerance: 0.02, classes: 91, positive: 1,
    full_flops: 200000,
    exits: [(layer: "layer2", stage: {stage}, channels: 24, head: Some((grid: {grid}, convs: [],
        linears: [], classes: 91)), dropped: None, temperature: 1.0, threshold: 0.9,
        budget: 0.01, selected: true, c1: 10, c2: 100)],
)
"""


def main():
    os.makedirs(OUT, exist_ok=True)
    files = {}
    # candle's pickle reader allocates a BINUNICODE's claimed length before reading it: 4 GiB.
    files["pth-binunicode-4gib"] = pth(b"\x80\x02X\xff\xff\xff\xffabc.", [])
    # Memo references are deep copies there: doubling a tuple 40 times from its memo asks for
    # 2^40 objects from 200 bytes.
    p = b"\x80\x02)q\x00"
    for _ in range(40):
        p += b"h\x00h\x00\x86q\x00"
    files["pth-memo-doubling"] = pth(p + b".", [])
    # 60000 nested 1-tuples: dropped recursively, they overflow a thread's stack.
    files["pth-deep-nesting"] = pth(b"\x80\x02N" + b"\x85" * 60000 + b".", [])
    # A tensor whose size asks for 4 TiB from a 16-byte storage (read by its claimed shape).
    files["pth-shape-beyond-storage"] = pth(
        state_dict([tensor("w", "0", 4, [1 << 20, 1 << 20])]), [("0", b"\x00" * 16)]
    )
    # The storage size claimed bigger than the archive entry.
    files["pth-storage-beyond-entry"] = pth(
        state_dict([tensor("w", "0", 1 << 28, [1 << 28])]), [("0", b"\x00" * 16)]
    )
    # A fill constant ([0.5] with shape 2^30) expanded to 4 GiB by the converter.
    files["graphdef-fill-4gib"] = conv_graph([1, 1, 1 << 15, 1 << 15], 1)
    # One 3x3x64x64 fill shared by 200 convs: each use decoded and folded again (7.4M floats from
    # 24 KB of graph), past what the graph's bytes and the fill allowance hold.
    files["graphdef-shared-fill"] = conv_graph([3, 3, 64, 64], 200)
    # Sizes over the image limits, in headers with no pixels behind them.
    files["png-20000x1"] = png_header(20000, 1)
    files["png-8192x8192-pixels"] = png_header(8192, 8192)
    files["jpeg-65535x65535"] = jpeg_header(65535, 65535)
    files["labelmap-20000x1"] = png_header(20000, 1, color=0)
    # exits.ron whose stage does not match its layer (stage 0 is layer1): loaded silently and
    # never fired before; and a head grid no stored activation has.
    files["exitsron-stage-mismatch"] = EXITS.format(stage=0, grid=1).encode()
    files["exitsron-grid-1e9"] = EXITS.format(stage=1, grid=1000000000).encode()
    for name, data in files.items():
        with open(os.path.join(OUT, name + ".bin"), "wb") as f:
            f.write(data)
        print(f"{name}.bin: {len(data)} bytes")


if __name__ == "__main__":
    main()
