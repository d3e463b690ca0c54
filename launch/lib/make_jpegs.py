#!/usr/bin/env python3
"""Writes a small ImageFolder of real JPEGs (ImageNet-like sizes) for the end-to-end tests:
    make_jpegs.py CJPEG OUT_DIR CLASSES TRAIN_PER_CLASS TEST_PER_CLASS
Class k is a pattern of stripes at angle k·45° in its own colour, with noise, on images of
256-320 × 240-300 pixels; OUT_DIR/train/class<k>/*.jpg and OUT_DIR/test/class<k>/*.jpg."""
import math, os, random, subprocess, sys


def image(k, w, h, rng):
    colour = [(200, 40, 40), (40, 160, 60), (40, 60, 200), (190, 170, 30)][k % 4]
    angle = math.pi / 4 * k
    cx, cy = math.cos(angle), math.sin(angle)
    out = bytearray()
    for y in range(h):
        for x in range(w):
            on = int((x * cx + y * cy) / 12) % 2
            for c in colour:
                out.append(max(0, min(255, (c if on else 255 - c) + rng.randint(-30, 30))))
    return b"P6 %d %d 255\n" % (w, h) + bytes(out)


def main():
    cjpeg, root, classes, train, test = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    rng = random.Random(7)
    for split, n in (("train", train), ("test", test)):
        for k in range(classes):
            d = os.path.join(root, split, "class%d" % k)
            os.makedirs(d, exist_ok=True)
            for i in range(n):
                ppm = image(k, rng.randint(256, 320), rng.randint(240, 300), rng)
                jpg = subprocess.run([cjpeg, "-quality", "90"], input=ppm, capture_output=True, check=True).stdout
                with open(os.path.join(d, "%04d.jpg" % i), "wb") as f:
                    f.write(jpg)


if __name__ == "__main__":
    main()
