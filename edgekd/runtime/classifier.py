"""OpenVocabClassifier: an exported student + a label pack -> predictions, on numpy and one inference backend.

    clf = OpenVocabClassifier.load("bundle/")                  # labels.npz of the bundle, backend by file type
    clf.classify("cat.jpg", top_k=3)                           # [Prediction(label, score, prob, index), ...]
    clf.classify(frame_bgr, color="bgr")                       # uint8 [H, W, 3] camera frame of any size
    clf.set_labels("other_labels.npz")                         # swap classes without reloading the model
    clf.add_examples("my mug", [img1, img2, img3])             # few-shot class from a handful of photos
    clf.embed(img)                                             # unit embedding [D] for retrieval / dedup

Preprocessing is the student's own (edgekd.preprocess with the bundle's Preprocess): the eval view is rendered with
the bundle's resize method (edgekd.resize: Pillow's filter, or OpenCV's area + linear) by the function training used,
bit for bit; a numpy frame already at the model's size is not resized. When the bundle normalises in-graph (input
`frames`, uint8 NHWC) only that render runs here, and when it also crops and resizes in-graph
(`--preprocess-in-graph full`) the frame goes to the model as it is (BGR frames too: the graph reorders the channels
after resizing).
Calls are thread-safe: the backend sessions are, and label sets are immutable snapshots swapped atomically.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from edgekd import EdgekdError
from edgekd.data.images import as_rgb_frame, frame_to_image, is_image_file, load_rgb, to_rgb
from edgekd.labelpack import LabelPack, load_label_pack
from edgekd.preprocess import Preprocess, clip_box
from edgekd.runtime.batching import accepted_batch, run_batched
from edgekd.runtime.bundle import BundleInfo, read_bundle, require_gate
from edgekd.runtime.labels import LabelSet, Prediction, mean_embedding

log = logging.getLogger(__name__)

ImageLike = np.ndarray | Image.Image | str | os.PathLike
LabelsLike = LabelPack | str | os.PathLike | Sequence[str]

__all__ = ["OpenVocabClassifier", "Prediction", "ImageLike", "channel_order_feed"]

CHANNEL_ORDER_INPUT = "channel_order"  # graph input of bundles that resize in-graph (edgekd.export.frame_head)


def channel_order_feed(color: str) -> np.ndarray:
    """The `channel_order` input of an in-graph-resizing model for frames in `color` ('rgb' or 'bgr') order."""
    if color not in ("rgb", "bgr"):
        raise ValueError(f"color must be 'rgb' or 'bgr', got {color!r}")
    return np.asarray((2, 1, 0) if color == "bgr" else (0, 1, 2), np.int64)


class OpenVocabClassifier:
    """A loaded bundle: `embed*` -> unit embeddings [D], `classify*` -> top-k `Prediction`s over the label set."""

    def __init__(self, info: BundleInfo, backend: Any, labels: LabelSet | None = None, text_encoder: Any = None,
                 reduced_jpeg: bool = False):
        self.info = info
        self.backend = backend
        self.text_encoder = text_encoder
        self._labels = labels
        self._write_lock = threading.Lock()  # serialises label edits (add_examples); reads take the snapshot
        self.preprocess = info.preprocess
        self.in_graph = info.preprocess_in_graph
        self.resize_in_graph = info.resize_in_graph
        self.input_dtype = np.dtype(getattr(backend, "input_dtype", np.uint8 if self.in_graph else np.float32))
        self._output = info.output_name
        self.reduced_jpeg = reduced_jpeg  # load()'s default is on

    @property
    def static_batch(self) -> int | None:
        """The model's fixed batch size, or None when it takes a range of batches."""
        lo, hi = accepted_batch(self.backend)
        return lo if lo == hi else None

    # --- loading --------------------------------------------------------------------------------------------------

    @classmethod
    def load(cls, bundle: str | os.PathLike, labels: LabelsLike | None = None, backend: str = "auto",
             threads: int | None = None, device: str | None = None, text_encoder: str | os.PathLike | None = None,
             verify: bool = True, spin: bool = False, allow_ungated: bool = False,
             resize_fallback: bool = False, reduced_jpeg: bool = True) -> OpenVocabClassifier:
        """Load a bundle directory. labels: a pack, its path or a list of names (default: the bundle's labels.npz);
        backend: 'auto' (by file type) or a name from edgekd.runtime.backends; text_encoder: an `edgekd export-text`
        directory (default: the bundle's own, if it carries one); verify: check files against their sha256;
        spin: let onnxruntime's worker threads busy-wait between calls (off by default: on a small CPU the spinning
        threads slow this process's own preprocessing and the app's other work more than they save);
        allow_ungated: load a bundle whose parity gate failed or was skipped (refused by default:
        UngatedBundleError names the parity report); resize_fallback: when the bundle's resize method needs a module
        this runtime lacks (OpenCV), use its numpy-only fallback (close, not bit-exact; refused by default with a
        MissingDependencyError naming the extra to install); reduced_jpeg: decode JPEG files at 1/2, 1/4 or 1/8
        scale while the model's crop stays at least twice its size (for 1080p files and a 224-px model, 0.57-0.73x
        the time, the render moving by 0.25-1.9 grey levels: benchmarks/results/gstreamer/gst_element.md); False
        decodes every file in full, as training did.

        On a CPU the bundle's gate did not run on, one guarded inference runs in a child process first
        (edgekd.runtime.canary), so that a model that crashes this CPU's kernels raises NativeCrashError here instead
        of killing the app."""
        from edgekd.runtime.backends import OrtBackend, create_backend, resolve_backend
        from edgekd.runtime.canary import check_runs_here

        info = read_bundle(bundle, verify=verify)
        require_gate(info, allow_ungated)
        info = _resize_here(info, resize_fallback)
        backend = resolve_backend(info.model_path, backend)
        check_runs_here(info, backend, threads, device)
        be = create_backend(info.model_path, backend=backend, threads=threads, device=device, spin=spin)
        if be.input_name != info.input_name:
            raise EdgekdError(f"{info.model_path}: model input is {be.input_name!r} but edgekd.json says "
                              f"{info.input_name!r}; re-export the bundle")
        if info.output_name not in be.output_names:
            raise EdgekdError(f"{info.model_path}: model has no output {info.output_name!r} (has {be.output_names})")
        if info.resize_in_graph and not isinstance(be, OrtBackend):
            raise EdgekdError(f"{info.root}: this bundle resizes frames in its graph, which runs on onnxruntime only; "
                              f"load it with backend='onnxruntime' (or 'ort-cuda'), not {be.name!r}")
        te = None
        te_dir = text_encoder if text_encoder is not None else info.text_encoder_dir
        if te_dir is not None:
            from edgekd.runtime.text import TextEncoder

            te = TextEncoder.load(te_dir, backend="auto", threads=threads, verify=verify, allow_ungated=allow_ungated)
            _check_text_encoder(te, info)
        clf = cls(info, be, None, te, reduced_jpeg)
        if labels is not None:
            clf.set_labels(labels)
        elif info.labels_path is not None:
            clf.set_labels(info.labels_path)
        log.info("loaded %s (%s, %s, in-graph preprocessing: %s) with %d labels", info.root, be.name,
                 info.meta.get("precision"), info.preprocess_in_graph, len(clf._labels or ()))
        return clf

    # --- labels ---------------------------------------------------------------------------------------------------

    @property
    def embed_dim(self) -> int:
        return self.info.embed_dim

    @property
    def class_names(self) -> list[str]:
        return list(self._labels.class_names) if self._labels is not None else []

    @property
    def label_set(self) -> LabelSet:
        if self._labels is None:
            raise EdgekdError("no labels loaded: pass labels=PACK to load(), call set_labels(...), or add a class "
                              "with add_examples(...)")
        return self._labels

    def set_labels(self, labels: LabelsLike, templates: Sequence[str] | None = None) -> None:
        """Swap the label set without reloading the model.

        labels: a LabelPack, a .npz path, or a list of label strings. Strings that are all classes of the current
        set select that subset; otherwise they are embedded by the text encoder (templates: '{}' strings, default
        "a photo of a {}."). Packs from another teacher or embedding size are refused.
        """
        new = self.make_label_set(labels, templates)
        with self._write_lock:
            self._labels = new

    def make_label_set(self, labels: LabelsLike, templates: Sequence[str] | None = None) -> LabelSet:
        """What set_labels() would install, without installing it (a caller that swaps label sets itself, such as
        the GStreamer element at a frame boundary, builds them off its hot thread with this)."""
        pack = self._resolve_labels(labels, templates)
        pack.check_compatible(self.info.teacher_id, self.info.embed_dim, what=f"the bundle {self.info.root}")
        return LabelSet.from_pack(pack, pack.meta.get("logit_scale") or self.info.logit_scale)

    def _resolve_labels(self, labels: LabelsLike, templates: Sequence[str] | None) -> LabelPack:
        if isinstance(labels, LabelPack):
            return labels
        if isinstance(labels, (str, os.PathLike)) and (str(labels).endswith(".npz") or Path(labels).is_file()):
            return load_label_pack(labels)
        if isinstance(labels, str):
            labels = [labels]
        if not isinstance(labels, Sequence) or not labels or not all(isinstance(x, str) for x in labels):
            raise ValueError("labels must be a LabelPack, a .npz path or a non-empty list of label strings")
        current = self._labels
        if current is not None and templates is None and all(n in current.class_names for n in labels):
            return current.pack.subset(list(labels))
        if self.text_encoder is None:
            raise EdgekdError("embedding new label strings needs a text encoder: export one with `edgekd export-text` "
                              "and pass text_encoder=DIR (or put it in the bundle), or use a label pack (.npz)")
        from edgekd.runtime.text import DEFAULT_TEMPLATES

        return self.text_encoder.build_label_pack(labels, DEFAULT_TEMPLATES if templates is None else templates)

    def set_thresholds(self, default: float | None = None, per_class: dict[str, float] | None = None,
                       on: str = "score", unknown_label: str = "unknown") -> None:
        """Answer `unknown_label` when the best class's cosine ('score') or softmax ('prob') is below its threshold
        (`per_class` {name: t} overrides `default`; None clears). Saved with save_labels()."""
        with self._write_lock:
            self._labels = self.label_set.with_thresholds(default, per_class, on, unknown_label)

    def add_examples(self, label: str, frames: Iterable[ImageLike], text_weight: float = 0.0,
                     color: str = "rgb") -> None:
        """Add (or replace) class `label` from a few photos: the normalised mean of their student embeddings, mixed
        as normalise((1 - w) * images + w * text) with the label's text embedding when `text_weight` w > 0 (taken
        from the current set if the label exists, else from the text encoder)."""
        if not isinstance(label, str) or not label.strip():
            raise ValueError(f"label must be a non-empty string, got {label!r}")
        if isinstance(frames, (np.ndarray, Image.Image, str, os.PathLike)):
            frames = [frames]
        frames = list(frames)
        if not frames:
            raise ValueError(f"add_examples({label!r}): give at least one example image")
        embs = self.embed_batch(frames, color=color)
        with self._write_lock:
            current = self._labels
            text_emb = None
            if text_weight and current is not None and label in current.class_names:
                text_emb = current.pack.embeddings[current.class_names.index(label)]
            elif text_weight and self.text_encoder is not None:
                text_emb = self.text_encoder.build_label_pack([label]).embeddings[0]
            proto = mean_embedding(embs, text_emb, text_weight)
            if current is None:
                meta = {"teacher_id": self.info.teacher_id, "embed_dim": self.info.embed_dim,
                        "logit_scale": self.info.logit_scale, "source": "few-shot on device"}
                pack = LabelPack([label], proto[None], {label: []}, meta)
                self._labels = LabelSet.from_pack(pack, self.info.logit_scale)
            else:
                self._labels = current.with_class(label, proto, note={"examples": len(frames),
                                                                      "text_weight": float(text_weight)})

    def save_labels(self, path: str | os.PathLike) -> Path:
        """Write the current label set (with few-shot classes and thresholds) as a label pack .npz."""
        return self.label_set.to_pack().save(path)

    # --- inference ------------------------------------------------------------------------------------------------

    def prepare(self, image: ImageLike, color: str = "rgb") -> np.ndarray:
        """One image -> the model input for it without the batch axis, RGB: the whole frame uint8 [H, W, 3]
        (in-graph resizing), uint8 [h, w, 3] (in-graph normalisation) or float32 [3, h, w] (normalised)."""
        if self.resize_in_graph:
            _check_color(color)
            frame, order = self._frame(image, color)
            return frame if order == "rgb" else np.ascontiguousarray(frame[..., ::-1])
        return self.pixels_to_inputs(self.render(image, color))

    def render(self, image: ImageLike, color: str = "rgb") -> np.ndarray:
        """One image -> its eval view at the model's size, uint8 [h, w, 3] RGB, with the bundle's resize method."""
        _check_color(color)
        if isinstance(image, np.ndarray):  # frames go to the resize as they are (BGR too: reordered after resizing)
            return self.preprocess.render(image, color=color)
        return self.preprocess.render(_to_image(image, color, self._jpeg_at_least()))

    def _frame(self, image: ImageLike, color: str) -> tuple[np.ndarray, str]:
        """-> (uint8 [H, W, 3] frame, its channel order) for a model that resizes in-graph. A uint8 HxWx3 numpy frame
        passes as it is (no copy when C-contiguous); other images are converted to RGB."""
        if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3 \
                and image.shape[0] > 0 and image.shape[1] > 0:
            return np.ascontiguousarray(image), color
        return np.asarray(_to_image(image, color, self._jpeg_at_least())), "rgb"

    def _jpeg_at_least(self) -> tuple[int, int] | None:
        """The size a JPEG may be decoded down to: twice the model's larger side both ways, so the render still
        shrinks at least 2x after libjpeg's DCT scaling (None: decode in full)."""
        if not self.reduced_jpeg:
            return None
        side = 2 * max(self.preprocess.size)
        return side, side

    def embed_inputs(self, x: np.ndarray, color: str = "rgb", batch_size: int | None = None) -> np.ndarray:
        """Prepared inputs [B, ...] -> unit embeddings float32 [B, D], run in batches the model accepts
        (edgekd.runtime.batching; batch_size: preferred batch). color: the channel order of whole frames given to a
        model that resizes in-graph."""
        x = np.ascontiguousarray(x, dtype=self.input_dtype)
        feeds = {CHANNEL_ORDER_INPUT: channel_order_feed(color)} if self.resize_in_graph else None
        out = np.asarray(run_batched(self.backend, x, feeds, batch_size)[self._output], np.float32)
        if out.ndim != 2 or out.shape[1] != self.embed_dim:
            raise EdgekdError(f"{self.info.model_path}: output shape {out.shape}, expected [B, {self.embed_dim}]")
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    def embed(self, image: ImageLike, color: str = "rgb") -> np.ndarray:
        """One image (path, PIL image or uint8 [H, W, 3] frame) -> float32 [D], unit norm."""
        if self.resize_in_graph:
            frame, order = self._frame(image, color)
            return self.embed_inputs(frame[None], order)[0]
        return self.embed_inputs(self.prepare(image, color)[None])[0]

    def embed_batch(self, images: Sequence[ImageLike], color: str = "rgb", batch_size: int = 32) -> np.ndarray:
        """N images -> float32 [N, D], unit rows. batch_size: images prepared per step and the preferred model
        batch (clamped to what the model accepts)."""
        images = _as_list(images)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if self.resize_in_graph:
            return self._embed_frames(images, color, batch_size)
        # the uint8 renders are stacked, then normalised in one pass (a quarter of the bytes to copy)
        out = [self.embed_inputs(self.pixels_to_inputs(np.stack([self.render(im, color)
                                                                 for im in images[i: i + batch_size]])),
                                 batch_size=batch_size) for i in range(0, len(images), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.embed_dim), np.float32)

    def _embed_frames(self, images: list[ImageLike], color: str, batch_size: int) -> np.ndarray:
        """embed_batch for in-graph resizing: runs of frames of one size and channel order go in one batch."""
        out = []
        for i in range(0, len(images), batch_size):
            frames = [self._frame(im, color) for im in images[i: i + batch_size]]
            for (_, order), group in itertools.groupby(frames, key=lambda f: (f[0].shape, f[1])):
                out.append(self.embed_inputs(np.stack([f for f, _ in group]), order, batch_size))
        return np.concatenate(out) if out else np.zeros((0, self.embed_dim), np.float32)

    def classify(self, image: ImageLike, top_k: int = 5, color: str = "rgb") -> list[Prediction]:
        """One image -> its top_k predictions, best first (see LabelSet.predict for the "unknown" answer)."""
        labels = self.label_set  # snapshot: a concurrent set_labels() does not mix two sets in one answer
        return labels.predict(self.embed(image, color)[None], top_k)[0]

    def classify_regions(self, image: ImageLike, boxes: Sequence[Sequence[float]] | np.ndarray, top_k: int = 5,
                         color: str = "rgb", batch_size: int = 32) -> list[list[Prediction] | None]:
        """One image + N boxes (x0, y0, x1, y1 in its pixels) -> N answers in box order: each box's top_k
        predictions, those classify() gives for that crop, or None for a box with no pixel inside the image.

        Boxes are rounded to whole pixels and clipped to the image (edgekd.preprocess.clip_box: a box partly outside
        is classified on the part inside); each crop is prepared as classify() prepares an image (the training eval
        view of an image of the crop's size, with the bundle's resize method) and the crops go to the model together,
        in batches of up to `batch_size` (in the chunks a fixed-batch model takes)."""
        labels = self.label_set
        boxes = box_rows(boxes)
        emb, kept = self.embed_regions(image, boxes, color, batch_size)
        answers: list[list[Prediction] | None] = [None] * len(boxes)
        for i, preds in zip(kept, labels.predict(emb, top_k) if kept else []):
            answers[i] = preds
        return answers

    def embed_regions(self, image: ImageLike, boxes: Sequence[Sequence[float]] | np.ndarray, color: str = "rgb",
                      batch_size: int = 32) -> tuple[np.ndarray, list[int]]:
        """One image + N boxes -> (float32 [M, D] unit rows, the indices of the M boxes with pixels in the image)."""
        frame, color = self._region_source(image, color)
        crops = [clip_box(box, frame.shape[1], frame.shape[0]) for box in box_rows(boxes)]
        kept = [i for i, c in enumerate(crops) if c is not None]
        regions = [frame[crops[i][1]: crops[i][3], crops[i][0]: crops[i][2]] for i in kept]
        return self.embed_batch(regions, color, batch_size), kept

    def pixels_to_inputs(self, pixels: np.ndarray) -> np.ndarray:
        """Rendered uint8 [N, h, w, 3] RGB at the model's size -> the model's input [N, ...] (a model that resizes
        in-graph takes them as frames already at its size)."""
        return pixels if self.in_graph else self.preprocess.normalize(pixels)

    def _region_source(self, image: ImageLike, color: str) -> tuple[np.ndarray, str]:
        """The frame regions are cut from: a numpy frame as it is (checked), any other image as RGB at full size."""
        if isinstance(image, np.ndarray):
            return as_rgb_frame(image, color)
        return np.asarray(_to_image(image, color)), "rgb"

    def classify_batch(self, images: Sequence[ImageLike], top_k: int = 5, color: str = "rgb",
                       batch_size: int = 32) -> list[list[Prediction]]:
        """N images -> N lists of top_k predictions."""
        labels = self.label_set
        return labels.predict(self.embed_batch(images, color, batch_size), top_k) if len(_as_list(images)) else []

    def scores(self, image: ImageLike, color: str = "rgb") -> tuple[np.ndarray, np.ndarray]:
        """One image -> (cosine [C], prob [C]) over the current label set, in its class order."""
        cos, prob = self.label_set.scores(self.embed(image, color)[None])
        return cos[0], prob[0]

    def describe(self) -> dict[str, Any]:
        return {"bundle": str(self.info.root), "backend": self.backend.name, "target": self.info.meta.get("target"),
                "precision": self.info.meta.get("precision"), "input": self.info.input_name,
                "size": list(self.info.size), "preprocess_in_graph": self.in_graph,
                "resize_in_graph": self.resize_in_graph, "embed_dim": self.embed_dim,
                "num_labels": len(self._labels or ()), "text_encoder": self.text_encoder is not None}


def find_images(inputs: Iterable[str | os.PathLike], recursive: bool = True) -> list[Path]:
    """Files and folders -> image files (folders: by extension, sorted; files are kept whatever their name, so a bad
    one is reported rather than silently dropped). Raises EdgekdError for a path that does not exist."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = p.rglob("*") if recursive else p.glob("*")
            # a broken link (dangling, or a loop) is kept too: decoding reports it instead of it vanishing
            out.extend(sorted(f for f in found
                              if is_image_file(f) and (f.is_file() or f.is_symlink() and not f.is_dir())))
        elif p.exists():
            out.append(p)
        else:
            raise EdgekdError(f"{p}: no such file or directory")
    return out


def _as_list(images: Any) -> list:
    if isinstance(images, (np.ndarray, Image.Image, str, os.PathLike)):
        if isinstance(images, np.ndarray) and images.ndim == 4:  # a stacked batch of frames [N, H, W, 3]
            return list(images)
        raise ValueError("expected a sequence of images; for one image use classify()/embed()")
    try:
        return list(images)
    except TypeError as e:
        raise ValueError(f"expected a sequence of images, got {type(images).__name__}") from e


def _check_color(color: str) -> None:
    if color not in ("rgb", "bgr"):
        raise ValueError(f"color must be 'rgb' or 'bgr', got {color!r}")


def box_rows(boxes: Any) -> np.ndarray:
    """Boxes -> float64 [N, 4]; ValueError naming the expected shape otherwise (an empty list is 0 boxes)."""
    try:
        arr = np.asarray(boxes, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"boxes must be N rows of (x0, y0, x1, y1), got {type(boxes).__name__}") from None
    if arr.size == 0:
        return arr.reshape(0, 4)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"boxes must be N rows of (x0, y0, x1, y1), got an array of shape {arr.shape}")
    return arr


def _to_image(image: ImageLike, color: str, jpeg_at_least: tuple[int, int] | None = None) -> Image.Image:
    """-> PIL RGB image (numpy frames in `color` order; files: edgekd.data.images.load_rgb, JPEGs at reduced scale
    down to `jpeg_at_least`)."""
    if isinstance(image, np.ndarray):
        return frame_to_image(image, color)
    if isinstance(image, Image.Image):
        if image.width < 1 or image.height < 1:
            raise ValueError(f"empty image of size {image.size}")
        return to_rgb(image)
    if isinstance(image, (str, os.PathLike)):
        return load_rgb(image, at_least=jpeg_at_least)  # BadImageError (an EdgekdError) for missing/corrupt files
    raise ValueError(f"expected an image path, a PIL image or a uint8 HxWx3 numpy frame, got {type(image).__name__}")


def _resize_here(info: BundleInfo, fallback: bool) -> BundleInfo:
    """The bundle's info, checked that its resize method runs here (or switched to the method's numpy fallback)."""
    import dataclasses

    from edgekd._optional import MissingDependencyError
    from edgekd.resize import check_available, get_method

    method = info.preprocess.resize_method
    try:
        check_available(method, where=str(info.root))
        return info
    except MissingDependencyError:
        alt = get_method(method).fallback
        if not fallback or alt is None:
            raise
    log.warning("%s: %s needs %s, which is not installed; resizing with the numpy fallback %r instead (close to, "
                "not bit-exact with, the pixels the model was trained and gated on)", info.root, method,
                get_method(method).needs, alt)
    pp = Preprocess.from_dict({**info.preprocess.to_dict(), "resize_method": alt})
    return dataclasses.replace(info, preprocess=pp)


def _check_text_encoder(te: Any, info: BundleInfo) -> None:
    if te.embed_dim != info.embed_dim:
        raise EdgekdError(f"text encoder {te.root} makes {te.embed_dim}-d embeddings but the bundle's are "
                          f"{info.embed_dim}-d; export the text encoder of the bundle's teacher")
    if te.teacher_id and info.teacher_id and te.teacher_id != info.teacher_id:
        raise EdgekdError(f"text encoder {te.root} is from teacher {te.teacher_id} but the bundle was distilled from "
                          f"{info.teacher_id}; run `edgekd export-text` with that teacher")
