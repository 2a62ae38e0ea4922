#!/usr/bin/env python3
"""omnitok from Python: video -> numpy tokens -> video, through the GStreamer elements.

    /usr/bin/python3 examples/tokens.py VIDEO MODEL_DIR [FRAMES] [FRAMES_OUT.rgb]

Encodes the first FRAMES frames (default 17) of the MP4 file VIDEO with
MODEL_DIR/encoder.onnx (`omnitokenc ! appsink`) and hands back each chunk as a numpy array
(tokens [t, h, w], or latents [C, t, h, w]) with its PTS and real frame count, printing one
line per chunk as examples/tokens_appsink.rs does. Then it feeds those arrays back through
`appsrc ! omnitokdec` with MODEL_DIR/decoder.onnx and gets the frames as one numpy array
[F, H, W, 3] (written to FRAMES_OUT.rgb, raw RGB, when given).

Nothing of the token format is re-implemented here: the chunk buffers carry an
`OmnitokChunkMeta` describing where the payload lies and what it holds, and omnitokdec's
`make-chunk` action signal writes new records. Needs Debian's python3-gi,
gir1.2-gst-plugins-base-1.0 and python3-numpy, and a GStreamer that finds the plugin
(`source scripts/env.sh` in a checkout, or a meson-installed plugin).
"""

import sys
from dataclasses import dataclass

import gi
import numpy as np

gi.require_version("Gst", "1.0")
gi.require_version("GstVideo", "1.0")
from gi.repository import GLib, Gst, GstVideo  # noqa: E402

DTYPES = {"u16": "<u2", "u32": "<u4", "f16": "<f2", "f32": "<f4"}


@dataclass
class Chunk:
    array: np.ndarray  # tokens [t, h, w] or latents [C, t, h, w]
    pts: int  # nanoseconds, Gst.CLOCK_TIME_NONE when unknown
    duration: int
    real_frames: int  # frames of video in the chunk; the rest is padding


def run(pipeline, sink, on_sample):
    """Plays `pipeline`, hands every sample of the appsink `sink` to `on_sample`, and raises
    the pipeline's first error."""
    pipeline.set_state(Gst.State.PLAYING)
    while (sample := sink.emit("pull-sample")) is not None:
        on_sample(sample)
    bus = pipeline.get_bus()
    error = None
    while (msg := bus.pop_filtered(Gst.MessageType.ERROR)) is not None and error is None:
        error = msg.parse_error()[0].message
    pipeline.set_state(Gst.State.NULL)
    if error:
        raise RuntimeError(error)


def encode(video, encoder, frames):
    """The chunks of the first `frames` frames of `video`, and the token stream's caps."""
    # Cutting the compressed stream before the decoder gives an exact frame count.
    pipeline = Gst.parse_launch(
        f'filesrc location="{video}" ! qtdemux name=demux demux.video_0 ! identity eos-after={frames + 1} '
        f'! decodebin ! videoconvert ! omnitokenc model-file="{encoder}" token-coding=u16 ! appsink name=sink sync=false'
    )
    caps, chunks = [None], []

    def on_sample(sample):
        buffer = sample.get_buffer()
        if buffer.has_flags(Gst.BufferFlags.HEADER):
            return  # the stream header, also in the caps
        caps[0] = sample.get_caps()
        s = buffer.get_custom_meta("OmnitokChunkMeta").get_structure()
        field = s.get_value
        shape = [field("grid-t"), field("grid-h"), field("grid-w")]
        if field("channels") > 0:
            shape.insert(0, field("channels"))
        ok, info = buffer.map(Gst.MapFlags.READ)
        assert ok, "unmappable chunk buffer"
        array = np.frombuffer(
            info.data, dtype=DTYPES[field("payload")], count=field("payload-count"), offset=field("payload-offset")
        )
        buffer.unmap(info)
        dtype = np.int64 if field("channels") == 0 else np.float32
        chunks.append(Chunk(array.astype(dtype).reshape(shape), buffer.pts, buffer.duration, field("real-frames")))

    run(pipeline, pipeline.get_by_name("sink"), on_sample)
    return caps[0], chunks


def decode(caps, chunks, decoder):
    """Frames [F, H, W, 3] (uint8 RGB) from numpy chunks of the stream `caps` describe."""
    pipeline = Gst.parse_launch(
        f'appsrc name=src format=time ! omnitokdec name=dec model-file="{decoder}" '
        f"! video/x-raw,format=RGB ! appsink name=sink sync=false"
    )
    src, dec = pipeline.get_by_name("src"), pipeline.get_by_name("dec")
    src.set_property("caps", caps)
    payload = DTYPES[caps.get_structure(0).get_value("payload")]
    pipeline.set_state(Gst.State.PLAYING)
    for c in chunks:
        data = GLib.Bytes.new(np.ascontiguousarray(c.array).astype(payload).tobytes())
        buffer = dec.emit("make-chunk", caps, data, c.pts, c.duration, c.real_frames)
        if buffer is None:
            raise ValueError("omnitokdec refused a chunk (see its warning message)")
        src.emit("push-buffer", buffer)
    src.emit("end-of-stream")
    frames = []

    def on_sample(sample):
        info = GstVideo.VideoInfo.new_from_caps(sample.get_caps())
        ok, m = sample.get_buffer().map(Gst.MapFlags.READ)
        assert ok, "unmappable frame"
        rows = np.frombuffer(m.data, np.uint8)[: info.height * info.stride[0]].reshape(info.height, info.stride[0])
        frames.append(rows[:, : info.width * 3].reshape(info.height, info.width, 3).copy())
        sample.get_buffer().unmap(m)

    run(pipeline, pipeline.get_by_name("sink"), on_sample)
    return np.stack(frames)


def main(argv):
    if len(argv) < 3:
        sys.exit("usage: tokens.py VIDEO MODEL_DIR [FRAMES] [FRAMES_OUT.rgb]")
    video, model = argv[1], argv[2].rstrip("/")
    frames = int(argv[3]) if len(argv) > 3 else 17
    Gst.init(None)
    caps, chunks = encode(video, f"{model}/encoder.onnx", frames)
    s = caps.get_structure(0)
    f = s.get_value
    grid = [f("grid-t"), f("grid-h"), f("grid-w")]
    print(
        f"stream: {f('width')}x{f('height')} (model runs at {f('padded-width')}x{f('padded-height')}), "
        f"{f('chunk-frames')} frames per chunk, grid {grid} per chunk, model {f('model-id')}"
    )
    for c in chunks:
        pts = (c.pts if c.pts != Gst.CLOCK_TIME_NONE else 0) / 1e9
        if c.array.dtype == np.int64:
            first = c.array.reshape(-1)[:8].tolist()
            print(f"chunk pts {pts:>8.3f} s: {c.real_frames} real frames, {c.array.size} tokens, first {first}")
        else:
            print(f"chunk pts {pts:>8.3f} s: {c.real_frames} real frames, {c.array.size} latent values")
    video_frames = decode(caps, chunks, f"{model}/decoder.onnx")
    print(f"decoded: {list(video_frames.shape)} uint8 frames from {len(chunks)} numpy chunks")
    if len(argv) > 4:
        video_frames.tofile(argv[4])


if __name__ == "__main__":
    main(sys.argv)
