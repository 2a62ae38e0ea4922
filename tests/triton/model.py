"""Triton Python-backend model that runs an omnitok graph (model.onnx beside this file's
version folder) with the onnxruntime wheel: the test stand-in for Triton's onnxruntime_onnx
platform, which the pytriton server does not ship.

The test repository is the one `omnitok-export --triton-repository` writes, with the
platform line replaced by `backend: "python"` (tests/support, `python_repository`). Each
request of a dynamic batch runs on its own, so the tokens are exactly those of a local run of
the same request.
"""

import json
import os
import sys

import numpy as np  # imported by the stub already; the backend needs it
import triton_python_backend_utils as pb_utils


def _parameter(config, key, default=None):
    p = config.get("parameters", {}).get(key)
    return p["string_value"] if p else default


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        # The onnxruntime package (unpacked by scripts/setup.sh --test beside the server).
        site = _parameter(config, "omnitok_test.onnxruntime_path")
        if site and site not in sys.path:
            sys.path.insert(0, site)
        import onnxruntime as ort

        folder = os.path.join(args["model_repository"], args["model_version"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(_parameter(config, "omnitok_test.intra_op_threads", "0"))
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            os.path.join(folder, "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        self.inputs = [i["name"] for i in config["input"]]
        self.outputs = [o["name"] for o in config["output"]]
        # "1": run the requests of a dynamic batch that share a geometry as one batch (as
        # Triton's onnxruntime backend does); "0": each on its own (bit-exact per request).
        self.join = _parameter(config, "omnitok_test.join_batches", "0") == "1"

    def execute(self, requests):
        if self.join and len(requests) > 1:
            return self._execute_joined(requests)
        responses = []
        for request in requests:
            try:
                feed = {n: pb_utils.get_input_tensor_by_name(request, n).as_numpy() for n in self.inputs}
                names = [o for o in self.outputs if o in request.requested_output_names()] or self.outputs
                values = self.session.run(names, feed)
                tensors = [pb_utils.Tensor(n, np.ascontiguousarray(v)) for n, v in zip(names, values)]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            except Exception as e:  # an error response for this request, not a dead model
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(e))))
        return responses

    def _execute_joined(self, requests):
        """Concatenates requests of equal input shapes (but the batch) along the batch axis."""
        feeds = [{n: pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in self.inputs} for r in requests]
        groups = {}
        for i, feed in enumerate(feeds):
            key = tuple((n, feed[n].shape[1:]) for n in self.inputs)
            groups.setdefault(key, []).append(i)
        responses = [None] * len(requests)
        for members in groups.values():
            try:
                joined = {n: np.concatenate([feeds[i][n] for i in members]) for n in self.inputs}
                values = self.session.run(self.outputs, joined)
                start = 0
                for i in members:
                    b = feeds[i][self.inputs[0]].shape[0]
                    tensors = [
                        pb_utils.Tensor(n, np.ascontiguousarray(v[start : start + b]))
                        for n, v in zip(self.outputs, values)
                    ]
                    responses[i] = pb_utils.InferenceResponse(output_tensors=tensors)
                    start += b
            except Exception as e:
                for i in members:
                    responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(e)))
        return responses

    def finalize(self):
        self.session = None
