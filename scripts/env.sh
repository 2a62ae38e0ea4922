# Source this from a checkout (bash) after ./scripts/demo.sh, so that gst-launch-1.0 and
# gst-inspect-1.0 find omnitokenc, omnitokparse and omnitokdec:
#   source scripts/env.sh
# It points GStreamer at the release plugin (the copy demo.sh makes alone in
# target/gstreamer-1.0/), the plugin at the ONNX Runtime that set-up fetched, ONNX Runtime's
# cache into .deps/, and PATH at omnitok-export. An installed plugin (meson install) needs none of this.
_omnitok_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export GST_PLUGIN_PATH="$_omnitok_root/target/gstreamer-1.0${GST_PLUGIN_PATH:+:$GST_PLUGIN_PATH}"
export ORT_DYLIB_PATH="$_omnitok_root/.deps/onnxruntime/libonnxruntime.so"
export XDG_CACHE_HOME="${XDG_CACHE_HOME:-$_omnitok_root/.deps/cache}"
export PATH="$_omnitok_root/target/release:$PATH"
unset _omnitok_root
