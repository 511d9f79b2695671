"""Triton Python-backend model: the toolkit's own runner inside the server.

Copied into a repository as `rating/1/model.py` by `rating-edge triton repo --backend python`, beside a
copy of the package (`rating/1/package/`) and of the toolkit that wrote it (`rating/1/rating_edge/`,
put first on the path here). The server's Python needs numpy, OpenCV, ONNX Runtime and jsonschema.
Requests that Triton's dynamic batcher groups arrive together in `execute` and are run as one batch,
then split back per request.
"""
import json
import os
import sys

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by the Triton Python backend

OUTPUTS = ("sh_prob", "vs_prob", "heat_gs", "heat_doppler")


class TritonPythonModel:
    def initialize(self, args):
        here = os.path.join(args["model_repository"], args["model_version"])
        if here not in sys.path:
            sys.path.insert(0, here)
        from rating_edge.infer import make_runner
        from rating_edge.package import load_package

        config = json.loads(args["model_config"])
        params = {k: v.get("string_value") for k, v in config.get("parameters", {}).items()}
        folder = os.path.join(here, "package")
        pkg = load_package(folder, verify=True)  # a changed package file is refused, as everywhere
        if params.get("rating_edge_model_hash") and params["rating_edge_model_hash"] != pkg.model_hash:
            raise pb_utils.TritonModelException(
                f"package model hash {pkg.model_hash} differs from the config's {params['rating_edge_model_hash']}")
        self.runner = make_runner(pkg, params.get("runner_backend") or "ort").activate()
        self.max_batch = int(config.get("max_batch_size", 0)) or 1

    def execute(self, requests):
        gs, dop, sizes = [], [], []
        for req in requests:
            g = pb_utils.get_input_tensor_by_name(req, "gs").as_numpy()
            d = pb_utils.get_input_tensor_by_name(req, "doppler").as_numpy()
            gs.append(g)
            dop.append(d)
            sizes.append(g.shape[0])
        try:
            out = self.runner.infer({"gs": np.concatenate(gs), "doppler": np.concatenate(dop)})
        except Exception as e:  # noqa: BLE001 - every request gets the error, the model stays loaded
            err = pb_utils.TritonError(f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=err) for _ in requests]
        responses, start = [], 0
        for n in sizes:
            tensors = [pb_utils.Tensor(k, np.ascontiguousarray(out[k][start:start + n], dtype=np.float32))
                       for k in OUTPUTS]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += n
        return responses

    def finalize(self):
        self.runner.deactivate()
