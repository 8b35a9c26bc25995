"""DeepStream: nvinfer runs the student, a pad probe scores its embedding against label embeddings.

UNTESTED: written against NVIDIA's documented pyds API (deepstream_python_apps) and the config of
`edgekd deepstream-config`; it has not run on a Jetson or a DeepStream install yet. Needs DeepStream + its python
bindings (pyds) and edgekd's runtime (numpy only).

    edgekd deepstream-config BUNDLE --out ds --frame-size 1920x1080      # prints the src-crop for the centre crop
    python examples/gstreamer/deepstream_probe.py ds/nvinfer_config.txt BUNDLE/labels.npz video.mp4 \
        [--src-crop 420:0:1080:1080] [--width 1920 --height 1080]
"""

from __future__ import annotations

import argparse
import ctypes
import sys

import numpy as np

from edgekd.gst import import_gst
from edgekd.labelpack import load_label_pack
from edgekd.runtime.labels import LabelSet


def embeddings(batch_meta, pyds, dim: int):
    """Yield (frame number, unit embedding [D]) from the NvDsInferTensorMeta that nvinfer attached to each frame."""
    l_frame = batch_meta.frame_meta_list
    while l_frame is not None:
        frame_meta = pyds.NvDsFrameMeta.cast(l_frame.data)
        l_user = frame_meta.frame_user_meta_list
        while l_user is not None:
            user_meta = pyds.NvDsUserMeta.cast(l_user.data)
            if user_meta.base_meta.meta_type == pyds.NvDsMetaType.NVDSINFER_TENSOR_OUTPUT_META:
                tensor_meta = pyds.NvDsInferTensorMeta.cast(user_meta.user_meta_data)
                layer = pyds.get_nvds_LayerInfo(tensor_meta, 0)  # output-blob-names=embedding: the only output
                ptr = ctypes.cast(pyds.get_ptr(layer.buffer), ctypes.POINTER(ctypes.c_float))
                emb = np.ctypeslib.as_array(ptr, shape=(dim,)).astype(np.float32)
                yield frame_meta.frame_num, emb / max(float(np.linalg.norm(emb)), 1e-12)
            l_user = l_user.next
        l_frame = l_frame.next


def make_probe(Gst, pyds, labels: LabelSet, top_k: int):
    dim = labels.pack.embed_dim

    def probe(pad, info):
        batch_meta = pyds.gst_buffer_get_nvds_batch_meta(hash(info.get_buffer()))
        for frame_num, emb in embeddings(batch_meta, pyds, dim):
            preds = labels.predict(emb[None], top_k)[0]
            print(f"frame {frame_num}: " + ", ".join(f"{p.label} {p.score:.3f}" for p in preds), flush=True)
        return Gst.PadProbeReturn.OK

    return probe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", help="nvinfer config from `edgekd deepstream-config`")
    ap.add_argument("labels", help="label pack .npz (the bundle's labels.npz or `edgekd labels` output)")
    ap.add_argument("video")
    ap.add_argument("--src-crop", default="", help="nvvideoconvert src-crop printed by deepstream-config")
    ap.add_argument("--width", type=int, default=1920)
    ap.add_argument("--height", type=int, default=1080)
    ap.add_argument("--top-k", type=int, default=3)
    args = ap.parse_args()
    import pyds  # DeepStream's python bindings

    Gst = import_gst()[0]
    crop = f" src-crop={args.src_crop}" if args.src_crop else ""
    pipe = Gst.parse_launch(
        f"filesrc location={args.video} ! decodebin ! nvvideoconvert{crop} ! "
        "video/x-raw(memory:NVMM),format=NV12 ! mux.sink_0 "
        f"nvstreammux name=mux batch-size=1 width={args.width} height={args.height} ! "
        f"nvinfer name=infer config-file-path={args.config} ! fakesink")
    labels = LabelSet.from_pack(load_label_pack(args.labels))
    pipe.get_by_name("infer").get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER,
                                                              make_probe(Gst, pyds, labels, args.top_k))
    pipe.set_state(Gst.State.PLAYING)
    msg = pipe.get_bus().timed_pop_filtered(Gst.CLOCK_TIME_NONE, Gst.MessageType.EOS | Gst.MessageType.ERROR)
    pipe.set_state(Gst.State.NULL)
    if msg.type == Gst.MessageType.ERROR:
        sys.exit(f"error: {msg.parse_error()[0].message}")


if __name__ == "__main__":
    main()
