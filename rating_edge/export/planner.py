"""Fusion planner: which backbones read which input, which are identical, and how they are stacked.

Identical backbones (same conv/BN weights, e.g. F shared by the six SH heads of a fold) are computed
once; the remaining unique backbones of each input stream are split into stacks of at most `chunk`
members, each stack becoming one grouped-conv chain in the fused graph.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from rating_edge.errors import RatingEdgeError
from rating_edge.export.weights import BackboneRef, CheckpointReader, network_backbones
from rating_edge.spec import parse_network_id

STREAMS = ("gs", "doppler")


@dataclass
class Plan:
    networks: list  # network ids in package order (spec.network_ids())
    unique: dict  # stream -> [BackboneRef] (first occurrence of each distinct backbone)
    uses: dict  # network id -> {stream: index into unique[stream]}
    stacks: dict  # stream -> [[index into unique[stream]], ...]
    chunk: int | None
    before: dict = field(default_factory=dict)  # stream -> backbones before dedup

    @property
    def sh_networks(self) -> list:
        return [n for n in self.networks if parse_network_id(n)[1] == "sh"]

    @property
    def vs_networks(self) -> list:
        return [n for n in self.networks if parse_network_id(n)[1] == "vs"]

    def describe(self) -> dict:
        """The fusion record of model.json."""
        return {
            "chunk": self.chunk,
            "dedup": {"backbones_before": sum(self.before.values()),
                      "backbones_after": sum(len(u) for u in self.unique.values()),
                      "per_stream": {s: {"before": self.before[s], "after": len(self.unique[s])} for s in STREAMS}},
            "stacks": [{"stream": s, "members": [self.unique[s][i].name for i in st],
                        "used_by": [sorted(n for n in self.networks if self.uses[n].get(s) == i) for i in st]}
                       for s in STREAMS for st in self.stacks[s]],
        }


def split(n: int, chunk: int | None) -> list:
    if chunk is None or chunk >= n:
        return [list(range(n))] if n else []
    return [list(range(i, min(i + chunk, n))) for i in range(0, n, chunk)]


def check_chunk(chunk) -> int | None:
    if chunk is None:
        return None
    if isinstance(chunk, str):
        if not chunk.isdigit():
            raise RatingEdgeError(f"--chunk must be a positive integer or 'auto', got {chunk!r}")
        chunk = int(chunk)
    if int(chunk) < 1:
        raise RatingEdgeError(f"--chunk must be at least 1 (1 = one branch per backbone), got {chunk}")
    return int(chunk)


def plan_fusion(reader: CheckpointReader, chunk: int | None = None, dedup: bool = True,
                networks: list | None = None) -> Plan:
    """Group backbones by input stream, dedup by weight hash, split into stacks of <= chunk members."""
    chunk = check_chunk(chunk)
    networks = list(networks or reader.spec.network_ids())
    unique: dict = {s: [] for s in STREAMS}
    index: dict = {s: {} for s in STREAMS}
    before = {s: 0 for s in STREAMS}
    uses: dict = {}
    for nid in networks:
        uses[nid] = {}
        for stream, ref in network_backbones(nid).items():
            if ref is None:
                continue
            before[stream] += 1
            key = reader.backbone_hash(ref) if dedup else ref.name
            if key not in index[stream]:
                index[stream][key] = len(unique[stream])
                unique[stream].append(ref)
            uses[nid][stream] = index[stream][key]
    stacks = {s: split(len(unique[s]), chunk) for s in STREAMS}
    return Plan(networks, unique, uses, stacks, chunk, before)


def single_network_plan(nid: str) -> Plan:
    """The `none` strategy: one network, its own backbones, no dedup, no grouping."""
    unique = {s: [] for s in STREAMS}
    uses = {nid: {}}
    for stream, ref in network_backbones(nid).items():
        if ref is not None:
            unique[stream].append(ref)
            uses[nid][stream] = 0
    return Plan([nid], unique, uses, {s: split(len(unique[s]), 1) for s in STREAMS}, 1,
                {s: len(unique[s]) for s in STREAMS})


__all__ = ["Plan", "plan_fusion", "single_network_plan", "BackboneRef", "STREAMS"]
