"""DeepStream: nvinfer runs the student, a pad probe scores its embedding against label embeddings.

UNTESTED: written against NVIDIA's documented pyds API (deepstream_python_apps) and the config of
`edgekd deepstream-config`; it has not run on a Jetson or a DeepStream install yet. Needs DeepStream + its python
bindings (pyds) and edgekd's runtime (numpy only).

Whole frames (the student as the primary nvinfer):

    edgekd deepstream-config BUNDLE --out ds --frame-size 1920x1080      # prints the src-crop for the centre crop
    python examples/gstreamer/deepstream_probe.py ds/nvinfer_config.txt BUNDLE/labels.npz video.mp4 \
        [--src-crop 420:0:1080:1080] [--width 1920 --height 1080]

Objects of a detector (the student as a secondary nvinfer on the primary detector's objects, nvtracker optional):

    edgekd deepstream-config BUNDLE --out ds --secondary --operate-on-class-ids 0 --batch-size 16
    python examples/gstreamer/deepstream_probe.py ds/nvinfer_config.txt BUNDLE/labels.npz video.mp4 \
        --detector pgie_config.txt [--tracker /opt/nvidia/deepstream/deepstream/lib/libnvds_nvmultiobjecttracker.so]
"""

from __future__ import annotations

import argparse
import ctypes
import sys

import numpy as np

from edgekd.deepstream import read_nvinfer_config
from edgekd.gst import import_gst
from edgekd.labelpack import load_label_pack
from edgekd.runtime.labels import LabelSet

UNTRACKED_OBJECT_ID = 0xFFFFFFFFFFFFFFFF  # NvDsObjectMeta.object_id without a tracker (nvdsmeta.h)


def tensor_metas(l_user, pyds):
    """The NvDsInferTensorMeta in a list of NvDsUserMeta (a frame's or an object's user meta)."""
    while l_user is not None:
        user_meta = pyds.NvDsUserMeta.cast(l_user.data)
        if user_meta.base_meta.meta_type == pyds.NvDsMetaType.NVDSINFER_TENSOR_OUTPUT_META:
            yield pyds.NvDsInferTensorMeta.cast(user_meta.user_meta_data)
        l_user = l_user.next


def unit_embedding(tensor_meta, pyds, dim: int) -> np.ndarray:
    """The [D] output of one frame or object, L2-normalised. pyds.get_nvds_LayerInfo points the layer's buffer at this
    meta's own host output (out_buf_ptrs_host; deepstream_python_apps bindings/src/bindfunctions.cpp), so each object
    of a batch reads its own row."""
    layer = pyds.get_nvds_LayerInfo(tensor_meta, 0)  # output-blob-names=embedding: the only output
    ptr = ctypes.cast(pyds.get_ptr(layer.buffer), ctypes.POINTER(ctypes.c_float))
    emb = np.ctypeslib.as_array(ptr, shape=(dim,)).astype(np.float32)
    return emb / max(float(np.linalg.norm(emb)), 1e-12)


def frames(batch_meta, pyds):
    l_frame = batch_meta.frame_meta_list
    while l_frame is not None:
        yield pyds.NvDsFrameMeta.cast(l_frame.data)
        l_frame = l_frame.next


def embeddings(batch_meta, pyds, dim: int):
    """Yield (frame number, unit embedding [D]) from the NvDsInferTensorMeta that nvinfer attached to each frame."""
    for frame_meta in frames(batch_meta, pyds):
        for tensor_meta in tensor_metas(frame_meta.frame_user_meta_list, pyds):
            yield frame_meta.frame_num, unit_embedding(tensor_meta, pyds, dim)


def object_embeddings(batch_meta, pyds, dim: int, unique_id: int):
    """Yield (frame number, NvDsObjectMeta, unit embedding [D]) for each object that the secondary nvinfer with
    gie-unique-id `unique_id` embedded: its tensor meta is in the object's obj_user_meta_list (NVIDIA's
    deepstream-infer-tensor-meta-test sgie_pad_buffer_probe walks frame_meta.obj_meta_list -> obj_user_meta_list the
    same way, and tells secondaries apart by tensor_meta.unique_id). Objects it skipped (other class or GIE, too small,
    not re-inferred) have none."""
    for frame_meta in frames(batch_meta, pyds):
        l_obj = frame_meta.obj_meta_list
        while l_obj is not None:
            obj_meta = pyds.NvDsObjectMeta.cast(l_obj.data)
            for tensor_meta in tensor_metas(obj_meta.obj_user_meta_list, pyds):
                if tensor_meta.unique_id == unique_id:
                    yield frame_meta.frame_num, obj_meta, unit_embedding(tensor_meta, pyds, dim)
            l_obj = l_obj.next


def describe(obj_meta) -> str:
    """'object 7 (person, class 2) at 10,20 64x128' from an NvDsObjectMeta."""
    oid = "untracked" if obj_meta.object_id == UNTRACKED_OBJECT_ID else obj_meta.object_id
    r = obj_meta.rect_params
    label = f"{obj_meta.obj_label}, " if obj_meta.obj_label else ""
    return f"object {oid} ({label}class {obj_meta.class_id}) at {r.left:.0f},{r.top:.0f} {r.width:.0f}x{r.height:.0f}"


def scored(batch_meta, pyds, labels: LabelSet, top_k: int, unique_id: int | None = None):
    """Lines 'frame N: label score, ...' from the frame-level tensor meta (the student as primary nvinfer), or with
    the secondary's `unique_id`, 'frame N object ...: label score, ...' for each object it embedded (a detector that
    attaches tensor meta of its own to frames is not read as embeddings)."""
    def answer(emb: np.ndarray) -> str:
        return ", ".join(f"{p.label} {p.score:.3f}" for p in labels.predict(emb[None], top_k)[0])

    dim = labels.pack.embed_dim
    if unique_id is None:
        for frame_num, emb in embeddings(batch_meta, pyds, dim):
            yield f"frame {frame_num}: {answer(emb)}"
        return
    for frame_num, obj_meta, emb in object_embeddings(batch_meta, pyds, dim, unique_id):
        yield f"frame {frame_num} {describe(obj_meta)}: {answer(emb)}"


def make_probe(Gst, pyds, labels: LabelSet, top_k: int, unique_id: int | None = None):
    def probe(pad, info):
        batch_meta = pyds.gst_buffer_get_nvds_batch_meta(hash(info.get_buffer()))
        for line in scored(batch_meta, pyds, labels, top_k, unique_id):
            print(line, flush=True)
        return Gst.PadProbeReturn.OK

    return probe


def pipeline_text(args) -> str:
    """gst-launch text: the student alone on whole frames, or behind a detector (and tracker) as its secondary."""
    crop = f" src-crop={args.src_crop}" if args.src_crop else ""
    head = (f"filesrc location={args.video} ! decodebin ! nvvideoconvert{crop} ! "
            "video/x-raw(memory:NVMM),format=NV12 ! mux.sink_0 "
            f"nvstreammux name=mux batch-size=1 width={args.width} height={args.height} ! ")
    if args.detector:
        head += f"nvinfer name=detector config-file-path={args.detector} ! "
        if args.tracker:
            tracker_config = f" ll-config-file={args.tracker_config}" if args.tracker_config else ""
            head += f"nvtracker ll-lib-file={args.tracker}{tracker_config} ! "
    return head + f"nvinfer name=infer config-file-path={args.config} ! fakesink"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", help="nvinfer config from `edgekd deepstream-config`")
    ap.add_argument("labels", help="label pack .npz (the bundle's labels.npz or `edgekd labels` output)")
    ap.add_argument("video")
    ap.add_argument("--src-crop", default="", help="nvvideoconvert src-crop printed by deepstream-config")
    ap.add_argument("--width", type=int, default=1920)
    ap.add_argument("--height", type=int, default=1080)
    ap.add_argument("--top-k", type=int, default=3)
    ap.add_argument("--detector", default="", metavar="PGIE_CONFIG",
                    help="the primary detector's nvinfer config (CONFIG: `deepstream-config --secondary`)")
    ap.add_argument("--tracker", default="", metavar="LIB", help="nvtracker ll-lib-file between detector and student")
    ap.add_argument("--tracker-config", default="", metavar="FILE", help="nvtracker ll-config-file")
    args = ap.parse_args()
    props = read_nvinfer_config(args.config)
    secondary = props.get("process-mode") == "2"
    if secondary != bool(args.detector):
        sys.exit(f"error: {args.config} is a {'secondary' if secondary else 'primary'} config: "
                 + ("pass --detector PGIE_CONFIG" if secondary else "--detector needs `deepstream-config --secondary`"))
    import pyds  # DeepStream's python bindings

    Gst = import_gst()[0]
    pipe = Gst.parse_launch(pipeline_text(args))
    labels = LabelSet.from_pack(load_label_pack(args.labels))
    unique_id = int(props["gie-unique-id"]) if secondary else None
    pipe.get_by_name("infer").get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER,
                                                              make_probe(Gst, pyds, labels, args.top_k, unique_id))
    pipe.set_state(Gst.State.PLAYING)
    msg = pipe.get_bus().timed_pop_filtered(Gst.CLOCK_TIME_NONE, Gst.MessageType.EOS | Gst.MessageType.ERROR)
    pipe.set_state(Gst.State.NULL)
    if msg.type == Gst.MessageType.ERROR:
        sys.exit(f"error: {msg.parse_error()[0].message}")


if __name__ == "__main__":
    main()
