#!/usr/bin/env python3
"""Loads an HTML page in headless Chromium and checks it rendered:
    page_check.py CHROMIUM PAGE.html SVG_COUNT SHOT.png
The DOM Chromium built must hold SVG_COUNT <svg> elements and a table, the console no error,
and the screenshot must not be blank (at least 0.3% of its pixels not white). Exit 0 when all hold."""
import re, struct, subprocess, sys, zlib


def chromium(binary, *args):
    cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--enable-logging=stderr", "--v=0", "--window-size=1280,2400", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def png_pixels(path):
    """(width, height, channels, rows of bytes) of an 8-bit RGB/RGBA PNG."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    width, height, depth, color = ihdr[:4]
    assert depth == 8 and color in (2, 6), f"unsupported PNG (depth {depth}, colour type {color})"
    channels = 3 if color == 2 else 4
    raw, stride, rows, prev = zlib.decompress(idat), width * channels, [], bytearray(width * channels)
    for y in range(height):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b, c = prev[i], prev[i - channels] if i >= channels else 0
            if f == 1: line[i] = (line[i] + a) & 255
            elif f == 2: line[i] = (line[i] + b) & 255
            elif f == 3: line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(line)
        prev = line
    return width, height, channels, rows


def main():
    binary, page, svgs, shot = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    url = "file://" + page
    dom = chromium(binary, "--dump-dom", url)
    errors = [l for l in dom.stderr.splitlines() if "CONSOLE" in l or "Uncaught" in l]
    found = len(re.findall(r"<svg\b", dom.stdout))
    tables = len(re.findall(r"<table\b", dom.stdout))
    shot_run = chromium(binary, f"--screenshot={shot}", url)
    width, height, channels, rows = png_pixels(shot)
    inked = sum(1 for row in rows for x in range(0, len(row), channels) if row[x] < 245 or row[x + 1] < 245 or row[x + 2] < 245)
    share = inked / (width * height)
    print(f"{page}: {found} svg, {tables} table, {len(errors)} console errors, screenshot {width}x{height} with {100 * share:.1f}% of pixels not white")
    for e in errors: print("  " + e)
    ok = dom.returncode == 0 and shot_run.returncode == 0 and not errors and found == svgs and tables == 1 and share >= 0.003
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
