"""The RATING model family (torch). Imported by export/train/verify, never by the runtime."""
from rating_edge.model.checkpoint import load_models, read_manifest, save_ensemble  # noqa: F401
from rating_edge.model.networks import SHNet, VSNet, build_network  # noqa: F401
from rating_edge.model.reference import ReferenceEnsemble, load_ensemble  # noqa: F401
from rating_edge.model.resnet import ResNet18, resnet18  # noqa: F401
from rating_edge.spec import PRESETS, EnsembleSpec, network_id, parse_network_id, preset  # noqa: F401
