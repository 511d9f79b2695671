"""Read backbone and head weights straight from the checkpoint's safetensors files, as numpy.

The exporter never materialises the whole ensemble: a paper-size ensemble is ~4 GB of FP32 weights on
a machine shared by several jobs, so each conv layer of each backbone is read (memory-mapped), folded
with its BatchNorm and written out before the next one is touched.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rating_edge.errors import CheckpointError
from rating_edge.model.checkpoint import MANIFEST, read_manifest
from rating_edge.package import sha256_file
from rating_edge.spec import EnsembleSpec, parse_network_id

BN_EPS = 1e-5  # torch.nn.BatchNorm2d's default, used by rating_edge.model.resnet


@dataclass(frozen=True)
class ConvLayer:
    """One conv of ResNet-18 with the BatchNorm that follows it (folded at export)."""

    conv: str  # key prefix of the conv, e.g. "layer2.0.conv1"
    bn: str  # key prefix of its BatchNorm, e.g. "layer2.0.bn1"
    cin: int
    cout: int
    k: int
    stride: int
    pad: int


def resnet18_layers(width: int) -> dict:
    """{"stem": ConvLayer, "blocks": [(conv1, conv2, downsample or None), ...]} in execution order."""
    w = width
    stem = ConvLayer("conv1", "bn1", 3, w, 7, 2, 3)
    blocks = []
    cin = w
    for li, (planes, stride) in enumerate([(w, 1), (2 * w, 2), (4 * w, 2), (8 * w, 2)], start=1):
        for bi in range(2):
            s = stride if bi == 0 else 1
            p = f"layer{li}.{bi}"
            c1 = ConvLayer(f"{p}.conv1", f"{p}.bn1", cin, planes, 3, s, 1)
            c2 = ConvLayer(f"{p}.conv2", f"{p}.bn2", planes, planes, 3, 1, 1)
            ds = None
            if s != 1 or cin != planes:
                ds = ConvLayer(f"{p}.downsample.0", f"{p}.downsample.1", cin, planes, 1, s, 0)
            blocks.append((c1, c2, ds))
            cin = planes
    return {"stem": stem, "blocks": blocks}


def backbone_params(width: int) -> int:
    """Folded conv weights + biases of one backbone (for size estimates)."""
    layers = resnet18_layers(width)
    convs = [layers["stem"]] + [c for blk in layers["blocks"] for c in blk if c is not None]
    return sum(c.cout * c.cin * c.k * c.k + c.cout for c in convs)


@dataclass(frozen=True)
class BackboneRef:
    """A ResNet-18 inside a network: F or G of an SH network ("F."/"G."), or a VS network itself ("")."""

    network: str
    prefix: str

    @property
    def name(self) -> str:
        return self.network + ("/" + self.prefix.rstrip(".") if self.prefix else "")


def network_backbones(nid: str) -> dict:
    """{"gs": BackboneRef | None, "doppler": BackboneRef} for one network."""
    _, module, _, _ = parse_network_id(nid)
    if module == "sh":
        return {"gs": BackboneRef(nid, "F."), "doppler": BackboneRef(nid, "G.")}
    return {"gs": None, "doppler": BackboneRef(nid, "")}


_EXPECTED: dict = {}


def _expected_shapes(module: str, spec: EnsembleSpec) -> dict:
    """Tensor names and shapes of the reference architecture (the model code is the source of truth)."""
    key = (module, spec)
    if key not in _EXPECTED:
        from rating_edge.model.networks import build_network
        from rating_edge.spec import network_id

        net = build_network(network_id(0, module, 0, 0), spec)
        _EXPECTED[key] = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    return _EXPECTED[key]


class CheckpointReader:
    """Memory-mapped, hash- and shape-checked access to a checkpoint folder's tensors."""

    def __init__(self, folder, verify_hash: bool = True):
        self.folder = Path(folder)
        data = read_manifest(self.folder)
        self.manifest = data
        self.spec: EnsembleSpec = data["spec_obj"]
        self._handles: dict = {}
        self._verify = verify_hash
        for nid in self.spec.network_ids():
            self._check(nid)

    def _path(self, nid: str) -> Path:
        return self.folder / self.manifest["networks"][nid]["file"]

    def _check(self, nid: str) -> None:
        from safetensors import safe_open

        entry = self.manifest["networks"][nid]
        path = self._path(nid)
        if not path.is_file():
            raise CheckpointError(f"{self.folder}: network {nid}: file {entry['file']} is missing")
        if self._verify and sha256_file(path) != entry.get("sha256"):
            raise CheckpointError(f"network {nid}: {path.name} does not match the SHA-256 in {MANIFEST} "
                                  "(file changed or truncated); restore it or re-create the checkpoint")
        try:
            h = safe_open(str(path), framework="numpy")
        except Exception as e:  # noqa: BLE001 - safetensors raises several types
            raise CheckpointError(f"network {nid}: {path.name} is not a readable safetensors file ({e})") from None
        expected = _expected_shapes(parse_network_id(nid)[1], self.spec)
        keys = set(h.keys())
        missing = [k for k in expected if k not in keys]
        if missing:
            raise CheckpointError(f"network {nid}: tensor {missing[0]!r} is missing")
        extra = sorted(keys - set(expected))
        if extra:
            raise CheckpointError(f"network {nid}: unexpected tensor {extra[0]!r}")
        for k, shape in expected.items():
            got = tuple(h.get_slice(k).get_shape())
            if got != shape:
                raise CheckpointError(f"network {nid}: tensor {k!r} has shape {got}, this spec needs {shape}")
        self._handles[nid] = h

    def get(self, nid: str, key: str) -> np.ndarray:
        return self._handles[nid].get_tensor(key)

    def backbone_hash(self, ref: BackboneRef) -> str:
        """SHA-256 of a backbone's conv and BatchNorm tensors (not its fc): equal hash = same function."""
        h = hashlib.sha256()
        handle = self._handles[ref.network]
        keys = sorted(k for k in handle.keys() if k.startswith(ref.prefix) and not k[len(ref.prefix):].startswith("fc.")
                      and not k.endswith("num_batches_tracked"))
        for k in keys:
            t = np.ascontiguousarray(handle.get_tensor(k))
            h.update(k[len(ref.prefix):].encode())
            h.update(str(t.dtype).encode() + str(t.shape).encode())
            h.update(t.tobytes())
        return h.hexdigest()

    def folded(self, ref: BackboneRef, layer: ConvLayer) -> tuple[np.ndarray, np.ndarray]:
        """Conv weight and bias with the BatchNorm folded in (float64 arithmetic, float32 result)."""
        p = ref.prefix
        w = self.get(ref.network, f"{p}{layer.conv}.weight").astype(np.float64)
        g = self.get(ref.network, f"{p}{layer.bn}.weight").astype(np.float64)
        b = self.get(ref.network, f"{p}{layer.bn}.bias").astype(np.float64)
        m = self.get(ref.network, f"{p}{layer.bn}.running_mean").astype(np.float64)
        v = self.get(ref.network, f"{p}{layer.bn}.running_var").astype(np.float64)
        scale = g / np.sqrt(v + BN_EPS)
        return (w * scale[:, None, None, None]).astype(np.float32), (b - m * scale).astype(np.float32)

    def _collapse(self, nid: str, first: str, last: str) -> dict:
        """Linear -> Linear without an activation is one linear map: only z1 - z0 = wd . x + bd
        matters for P and the cam, so both layers fold into one vector (float64, then float32)."""
        w1 = self.get(nid, f"{first}.weight").astype(np.float64)
        b1 = self.get(nid, f"{first}.bias").astype(np.float64)
        w2 = self.get(nid, f"{last}.weight").astype(np.float64)
        b2 = self.get(nid, f"{last}.bias").astype(np.float64)
        w2d = w2[1] - w2[0]
        return {"linear": True, "wd": (w2d @ w1).astype(np.float32),
                "bd": np.float32(w2d @ b1 + b2[1] - b2[0])}

    def sh_head(self, nid: str) -> dict:
        """"mlp": H = Linear(16w, hidden) -> ReLU -> Linear(hidden, 2); only z1 - z0 matters for P and
        the cam. "linear2": the collapsed linear map (see _collapse)."""
        if self.spec.head == "linear2":
            return self._collapse(nid, "H.0", "H.1")
        w2 = self.get(nid, "H.2.weight").astype(np.float64)
        b2 = self.get(nid, "H.2.bias").astype(np.float64)
        return {"linear": False, "w1": self.get(nid, "H.0.weight").astype(np.float32),
                "b1": self.get(nid, "H.0.bias").astype(np.float32),
                "w2d": (w2[1] - w2[0]).astype(np.float32), "b2d": np.float32(b2[1] - b2[0])}

    def vs_head(self, nid: str) -> dict:
        if self.spec.head == "linear2":
            return self._collapse(nid, "fc.0", "fc.1")
        w = self.get(nid, "fc.weight").astype(np.float64)
        b = self.get(nid, "fc.bias").astype(np.float64)
        return {"wd": (w[1] - w[0]).astype(np.float32), "bd": np.float32(b[1] - b[0])}
