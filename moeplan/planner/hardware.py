"""GPU facts the planner needs: memory, memory bandwidth and matmul peak, per card name.

`Card.from_name("NVIDIA H200")` finds a card by the name the engine puts in tuning-file
names (any spelling `naming.normalize_device_name` maps to the same one). Two bandwidths
are kept: the datasheet number (shown to the user) and what a copy kernel reaches on the
card (used for roofline floors, because the committed tables' `floor_us` were computed
with the measured copy bandwidth, and the planner scales floors by measured/floor ratios).

Pure Python: no torch, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

from moeplan.base.errors import MoeplanError
from moeplan.base.safeio import check_device_name
from moeplan.engines.vllm import normalize_device_name

GiB = 1024 ** 3


class HardwareError(MoeplanError):
    """An unknown card or a bad memory size."""


@dataclass(frozen=True)
class Card:
    name: str  # as nvidia-smi / the engine spell it
    memory_bytes: int
    nominal_bandwidth_Bps: float  # datasheet HBM bandwidth
    copy_bandwidth_Bps: float  # what a device-to-device copy reaches (read + write)
    bf16_flops: float  # dense bf16 matmul rate reached by a large GEMM
    fp8_flops: Optional[float]  # dense fp8 matmul rate (None: no fp8 tensor cores)
    source: str  # where the numbers come from

    @property
    def memory_gib(self) -> float:
        return self.memory_bytes / GiB

    @property
    def key(self) -> str:
        return normalize_device_name(self.name)

    def peak_flops(self, scheme: str) -> float:
        """The matmul rate a scheme's GEMMs run at: 8-bit activations use the fp8/int8 rate."""
        if scheme in ("fp8_w8a8", "int8_w8a8"):
            return self.fp8_flops or 2 * self.bf16_flops
        if scheme == "fp32":
            return self.bf16_flops / 2
        return self.bf16_flops

    def with_memory_gib(self, gib: float) -> "Card":
        return replace(self, memory_bytes=int(gib * GiB), source=self.source + f"; memory set to {gib:g} GiB")

    @classmethod
    def from_name(cls, name: str) -> "Card":
        key = normalize_device_name(name)
        card = CARDS.get(key)
        if card is None:
            raise HardwareError(
                f"--device-name {name!r} is not a card moeplan knows the memory and bandwidth of; known: "
                f"{', '.join(repr(c.name) for c in CARDS.values())}; or pass --gpu-mem GiB for another card")
        return card


_H100_MEASURED = "copy bandwidth and matmul rates measured on one H100 by the tuner (tuned/REPORT.md)"
_CARDS = (
    Card("NVIDIA H100 80GB HBM3", 80 * GiB, 3.35e12, 2.97e12, 790e12, 1430e12, _H100_MEASURED),
    Card("NVIDIA H200", 143771 * 1024 ** 2, 4.8e12, 4.3e12, 790e12, 1500e12,
         "141 GB HBM3e (143771 MiB), 4.8 TB/s datasheet; copy and matmul rates measured on one H200"),
    # The cards below carry datasheet numbers scaled like the H100's measured/datasheet ratios
    # (copy 0.89x bandwidth, matmul 0.80x dense peak); not measured by moeplan.
    Card("NVIDIA A100-SXM4-80GB", 80 * GiB, 2.039e12, 1.81e12, 250e12, None,
         "datasheet (2.04 TB/s, 312 TFLOP/s bf16) scaled by the H100's measured ratios; no fp8"),
    Card("NVIDIA H20", 97871 * 1024 ** 2, 4.0e12, 3.56e12, 118e12, 237e12,
         "96 GB (97871 MiB); datasheet (4.0 TB/s, 148 TFLOP/s bf16, 296 fp8) scaled by the H100's measured ratios"),
    Card("NVIDIA B200", 183359 * 1024 ** 2, 8.0e12, 7.1e12, 1800e12, 3600e12,
         "180 GB (183359 MiB); datasheet (8 TB/s, 2.25 PFLOP/s bf16, 4.5 fp8 dense) scaled by the H100's measured "
         "ratios"),
)
CARDS: dict[str, Card] = {c.key: c for c in _CARDS}
DEFAULT_CARD = "NVIDIA H100 80GB HBM3"  # the card moeplan's committed tables were tuned on


def card_for(device_name: Optional[str], gpu_mem_gib: Optional[float]) -> tuple[Card, str]:
    """The card a plan uses and a one-line reason: --device-name, else the default card;
    --gpu-mem overrides its memory (an unknown --device-name is fine with --gpu-mem: the
    default card's bandwidth and peak stand in, and the reason says so)."""
    if isinstance(gpu_mem_gib, str):
        try:
            gpu_mem_gib = float(gpu_mem_gib)
        except ValueError:
            raise HardwareError(f"--gpu-mem {gpu_mem_gib!r} is invalid; expected GiB per GPU, a number in (0, 4096]") \
                from None
    if gpu_mem_gib is not None and not (isinstance(gpu_mem_gib, (int, float)) and 0 < gpu_mem_gib <= 4096):
        raise HardwareError(f"--gpu-mem {gpu_mem_gib!r} is invalid; expected GiB per GPU, a number in (0, 4096]")
    if device_name is not None:  # the rule of every --device-name: no markup, `/`, `,` `=` or control characters
        check_device_name(device_name, "--device-name", HardwareError)
    if device_name is None:
        card, why = CARDS[normalize_device_name(DEFAULT_CARD)], f"no --device-name: {DEFAULT_CARD} assumed"
    elif gpu_mem_gib is None or normalize_device_name(device_name) in CARDS:
        card, why = Card.from_name(device_name), f"--device-name {device_name}"  # an unknown name raises here
    else:
        base = CARDS[normalize_device_name(DEFAULT_CARD)]
        card = replace(base, name=device_name, source=f"unknown card: {DEFAULT_CARD}'s bandwidth and peak")
        why = f"--device-name {device_name} (unknown card: {DEFAULT_CARD}'s bandwidth and peak stand in)"
    if gpu_mem_gib is not None:
        card = card.with_memory_gib(gpu_mem_gib)
        why += f", --gpu-mem {gpu_mem_gib:g} GiB"
    return card, why
