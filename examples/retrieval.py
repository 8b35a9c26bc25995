"""Text-to-image search over a folder with an exported student (no torch): embed the images once, then rank them by
cosine to a query, given as a class of a label pack or as free text (with an on-device text encoder).

    python examples/retrieval.py BUNDLE_DIR IMAGES_DIR --query "a red car" [--text-encoder DIR] [--top 5]
    python examples/retrieval.py BUNDLE_DIR IMAGES_DIR --query cat --labels labels.npz
    python examples/retrieval.py BUNDLE_DIR IMAGES_DIR --like some_image.jpg      # image-to-image (dedup)

The index is cached as IMAGES_DIR-embeddings.npz (paths + embeddings) and rebuilt when the bundle or files change.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from edgekd import EdgekdError
from edgekd.runtime.classifier import OpenVocabClassifier, find_images


def build_index(clf: OpenVocabClassifier, folder: Path, cache: Path | None) -> tuple[list[str], np.ndarray]:
    """All images under `folder` -> (paths, unit embeddings [N, D]); unreadable images are skipped with a note."""
    paths = [str(p) for p in find_images([folder])]
    key = json.dumps({"bundle": clf.info.meta.get("sha256"), "files": [(p, Path(p).stat().st_mtime) for p in paths]})
    if cache is not None and cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            if str(z["key"]) == key:
                return [str(p) for p in z["paths"]], z["embeddings"]
    kept, embs = [], []
    for p in tqdm(paths, desc="embedding", unit="img"):
        try:
            embs.append(clf.embed(p))
            kept.append(p)
        except (EdgekdError, ValueError) as e:
            print(f"skipped {e}", file=sys.stderr)
    emb = np.stack(embs) if embs else np.zeros((0, clf.embed_dim), np.float32)
    if cache is not None:
        np.savez(cache, key=np.array(key), paths=np.array(kept), embeddings=emb)
    return kept, emb


def query_embedding(clf: OpenVocabClassifier, args: argparse.Namespace) -> np.ndarray:
    """[D] unit vector for --like IMAGE, or for --query via the label pack / the text encoder."""
    if args.like:
        return clf.embed(args.like)
    names = clf.class_names
    if args.query in names:
        return clf.label_set.pack.embeddings[names.index(args.query)]
    if clf.text_encoder is None:
        raise EdgekdError(f"--query {args.query!r} is not a class of the label pack and there is no text encoder; "
                          "pass --text-encoder DIR (edgekd export-text) or --labels PACK")
    return clf.text_encoder.build_label_pack([args.query]).embeddings[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("images", type=Path)
    q = ap.add_mutually_exclusive_group(required=True)
    q.add_argument("--query", help="text query (a label-pack class or free text with a text encoder)")
    q.add_argument("--like", help="an image: find the most similar ones (duplicates score ~1.0)")
    ap.add_argument("--labels", default=None, help="label pack .npz (default: the bundle's)")
    ap.add_argument("--text-encoder", default=None, help="edgekd export-text directory")
    ap.add_argument("--top", type=int, default=5)
    ap.add_argument("--allow-ungated", action="store_true", help="use a bundle whose parity gate failed or was skipped")
    ap.add_argument("--no-cache", action="store_true")
    ap.add_argument("--json", action="store_true", help="print JSON lines")
    args = ap.parse_args(argv)
    try:
        clf = OpenVocabClassifier.load(args.bundle, labels=args.labels, text_encoder=args.text_encoder,
                                       allow_ungated=args.allow_ungated)
        if not args.images.is_dir():
            raise EdgekdError(f"{args.images}: not a directory")
        cache = None if args.no_cache else args.images.parent / f"{args.images.name}-embeddings.npz"
        paths, emb = build_index(clf, args.images, cache)
        if not paths:
            raise EdgekdError(f"{args.images}: no readable images")
        sims = emb @ query_embedding(clf, args)
    except EdgekdError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    for i in np.argsort(-sims)[: args.top]:
        if args.json:
            print(json.dumps({"image": paths[i], "cosine": round(float(sims[i]), 6)}))
        else:
            print(f"{sims[i]:+.3f}  {paths[i]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
