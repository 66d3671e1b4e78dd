#!/usr/bin/env python3
"""Checks quantd's semantic-ID codes against NumPy (issue #12: exact match in nearest mode).

Loads the codebooks `quantctl export-tokenizer` wrote (.npz, arrays arr_0 .. arr_{L-1} of
K_l x d), a vectors file (.npy or .fvecs) whose row i is item i, and the codes of
`quantctl export-sids --codes` (.npy, int64, items x (L + 1), item-id order, so row i is item i
too). Encodes every row greedily, as a nearest-mode tokenizer does: per level the nearest code
to the residual (squared L2 distances in float64), then subtracts that code. Compares the codes.

A row may differ only where NumPy saw a near-tie: at some level its two best distances within
a relative 1e-6 (float32 arithmetic in quantd may break those the other way). Such rows are
counted and must stay under 0.1% of the rows. Exit status: 0 match, 1 mismatch, 2 bad input.
"""
import argparse
import sys

import numpy as np

TIE_RELATIVE = 1e-6
MAX_TIE_SHARE = 0.001


def fail(message, code=2):
    print(f"numpy_encode_check: {message}", file=sys.stderr)
    sys.exit(code)


def load_vectors(path):
    if path.endswith(".npy"):
        x = np.load(path)
    elif path.endswith(".fvecs"):
        raw = np.fromfile(path, dtype="<i4")
        if raw.size == 0:
            fail(f"{path}: empty")
        d = int(raw[0])
        if d <= 0 or raw.size % (d + 1) != 0:
            fail(f"{path}: not an .fvecs file (first row dimension {d}, {raw.size} words)")
        rows = raw.reshape(-1, d + 1)
        if not (rows[:, 0] == d).all():
            fail(f"{path}: rows of differing dimension")
        x = rows[:, 1:].copy().view("<f4")
    else:
        fail(f"{path}: expected .npy or .fvecs")
    if x.ndim != 2:
        fail(f"{path}: expected a 2-D array, got shape {x.shape}")
    return x.astype(np.float32)


def load_codebooks(path):
    archive = np.load(path)
    names = sorted(archive.files, key=lambda n: int(n.split("_")[-1]))
    if names != [f"arr_{l}" for l in range(len(names))]:
        fail(f"{path}: members {archive.files}, expected arr_0 .. arr_{{L-1}}")
    books = [archive[n] for n in names]
    for name, book in zip(names, books):
        if book.ndim != 2 or book.dtype != np.float32:
            fail(f"{path}: member {name} is {book.dtype} of shape {book.shape}, expected K x d "
                 "float32")
    return books


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codebooks", required=True, help="export-tokenizer's .npz")
    parser.add_argument("--vectors", required=True, help=".npy or .fvecs; row i is item i")
    parser.add_argument("--codes", required=True, help="export-sids --codes .npy")
    parser.add_argument("--normalize", action="store_true",
                        help="unit-normalise the vectors first (cosine collections)")
    args = parser.parse_args()

    books = load_codebooks(args.codebooks)
    x = load_vectors(args.vectors)
    codes = np.load(args.codes)
    levels = len(books)
    if codes.ndim != 2 or codes.shape[1] != levels + 1:
        fail(f"{args.codes}: shape {codes.shape}, expected (items, {levels + 1}) for "
             f"{levels} levels")
    if codes.shape[0] != x.shape[0]:
        fail(f"{args.codes}: {codes.shape[0]} rows, {args.vectors} has {x.shape[0]}")
    for l, book in enumerate(books):
        if book.shape[1] != x.shape[1]:
            fail(f"{args.codebooks}: arr_{l} has dimension {book.shape[1]}, the vectors "
                 f"{x.shape[1]}")
    if args.normalize:
        x = x / np.linalg.norm(x, axis=1, keepdims=True)

    n = x.shape[0]
    ours = np.zeros((n, levels), dtype=np.int64)
    tie = np.zeros(n, dtype=bool)
    residual = x.astype(np.float64)
    for l, book in enumerate(books):
        c = book.astype(np.float64)
        distances = (residual ** 2).sum(1, keepdims=True) - 2 * residual @ c.T + (c ** 2).sum(1)
        best = np.argmin(distances, axis=1)
        ours[:, l] = best
        if c.shape[0] > 1:
            two = np.partition(distances, 1, axis=1)[:, :2]
            scale = np.maximum(np.abs(two[:, 1]), np.finfo(np.float64).tiny)
            tie |= (two[:, 1] - two[:, 0]) <= TIE_RELATIVE * scale
        residual = residual - c[best]

    theirs = codes[:, :levels]
    differ = (ours != theirs).any(axis=1)
    unexplained = differ & ~tie
    excused = differ & tie
    print(f"rows {n}, levels {levels}: {n - differ.sum()} identical, {tie.sum()} with a near-tie "
          f"(relative {TIE_RELATIVE:g}), {excused.sum()} differing at a near-tie, "
          f"{unexplained.sum()} differing otherwise")
    if unexplained.any():
        for i in np.flatnonzero(unexplained)[:10]:
            print(f"  row {i}: numpy {ours[i].tolist()}, quantd {theirs[i].tolist()}")
        sys.exit(1)
    if excused.sum() >= MAX_TIE_SHARE * n:
        print(f"  {excused.sum()} rows differ at near-ties: not under {MAX_TIE_SHARE:.1%} of "
              f"{n}")
        sys.exit(1)
    sys.exit(0)


if __name__ == "__main__":
    main()
