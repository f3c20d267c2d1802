#!/usr/bin/env python3
"""Writes N Fashion-MNIST training images (the first N, or from --start) as a folder of PNGs, one subfolder per
class (the small-folder rows of the README's results table): python3 fashion_mnist_folder.py 4000 fm4k; the
held-out queries: python3 fashion_mnist_folder.py 5000 fmq --start 50000

Standard library only; reads Debian's dataset-fashion-mnist IDX files (or the folder given by --idx).
"""
import argparse, gzip, os, struct, zlib

CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"]


def read_idx(path):
    with gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = struct.unpack(">" + "I" * dims, data[4:4 + 4 * dims])
    return shape, data[4 + 4 * dims:]


def png(width, height, pixels):
    """An 8-bit grayscale PNG of `pixels` (row-major bytes)."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    rows = b"".join(b"\x00" + pixels[y * width:(y + 1) * width] for y in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b""))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("count", type=int, help="how many training images")
    parser.add_argument("--start", type=int, default=0, help="the index of the first image written (default 0)")
    parser.add_argument("output", help="the folder to write")
    parser.add_argument("--idx", default="/usr/share/datasets/fashion-mnist", help="folder of the IDX files")
    args = parser.parse_args()
    (n, h, w), images = read_idx(os.path.join(args.idx, "train-images-idx3-ubyte.gz"))
    _, labels = read_idx(os.path.join(args.idx, "train-labels-idx1-ubyte.gz"))
    if not 0 <= args.start < n or not 1 <= args.count <= n - args.start:
        parser.error(f"start must be 0...{n - 1} and count 1...{n} - start")
    for i in range(args.start, args.start + args.count):
        folder = os.path.join(args.output, CLASSES[labels[i]])
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"{i:05d}.png"), "wb") as f:
            f.write(png(w, h, images[i * h * w:(i + 1) * h * w]))


if __name__ == "__main__":
    main()
