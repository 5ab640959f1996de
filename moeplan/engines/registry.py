"""Every engine profile moeplan knows, and which one a command uses: `--engine NAME`, else the
installed engine's (its version read from package metadata, never by importing it), else the
newest. Adding an engine is adding its module beside `vllm.py` and listing its profiles here;
`engine_of(profile)` gives the module whose names, lookup and default rule a profile's engine uses.

Pure: no I/O at import, no torch/triton.
"""

from __future__ import annotations

from typing import Callable, Optional

from moeplan.engines import sglang, vllm
from moeplan.engines.profile import EngineError, EngineProfile, ProfileChoice, parse_version

PROFILES: dict[str, EngineProfile] = {**vllm.PROFILES, **sglang.PROFILES}
ENGINES = {"vllm": vllm, "sglang": sglang}
# The default profile: the newest vLLM one (SGLang's are chosen by --engine or an installed SGLang).
NEWEST = max(vllm.PROFILES.values(), key=lambda p: p.first).name


def engine_of(profile: Optional[EngineProfile]):
    """The module of a profile's engine (`vllm` or `sglang`: names, lookup, default rule); None: vllm."""
    return ENGINES[profile.engine if profile is not None else "vllm"]


def is_sglang(profile: Optional[EngineProfile]) -> bool:
    return profile is not None and profile.engine == "sglang"


def get_profile(name: str) -> EngineProfile:
    """The profile called `name`; EngineError (one line) naming the valid ones otherwise."""
    p = PROFILES.get(name.strip().lower()) if isinstance(name, str) else None
    if p is None:
        raise EngineError(f"--engine {name!r} is not a known engine profile; valid: {', '.join(PROFILES)}")
    return p


def profile_for_version(version: str, engine: str = "vllm") -> tuple[EngineProfile, Optional[str]]:
    """The profile of an engine release, and a warning line when it is only the nearest one."""
    v = parse_version(version)
    profiles = ENGINES[engine].PROFILES
    newest = max(profiles.values(), key=lambda p: p.first)
    if v is None:
        return newest, (f"the installed {engine} version {version!r} cannot be read; using the newest profile "
                        f"{newest.name}")
    for p in sorted(profiles.values(), key=lambda p: p.first, reverse=True):
        if v >= p.first:
            if p.last is None and v > p.first and p is newest:
                return p, (f"{engine} {version} is newer than the newest profile {p.name}; using {p.name}")
            if p.last is not None and v > p.last:
                # between two profiles' ranges: the older release's behaviour is the nearer guess
                return p, (f"{engine} {version} lies between the profiles' release ranges; using {p.name} "
                           f"({p.releases.split(':')[0]})")
            return p, None
    oldest = min(profiles.values(), key=lambda p: p.first)
    return oldest, f"{engine} {version} is older than the oldest profile {oldest.name}; using {oldest.name}"


def choose_profile(explicit: Optional[str] = None,
                   version_of: Optional[Callable[[str], Optional[str]]] = None) -> ProfileChoice:
    """--engine NAME if given; else the installed vllm's profile; else, when SGLang and not vllm
    is installed, SGLang's; else the newest (vLLM) profile. Versions come from package metadata."""
    if explicit is not None:
        if not explicit.strip():
            raise EngineError(f"--engine '' is empty; valid: {', '.join(PROFILES)}")
        p = get_profile(explicit)
        return ProfileChoice(p, f"--engine {p.name}")
    version = vllm.installed_engine_version(version_of)
    if version is not None:
        p, warning = profile_for_version(version)
        return ProfileChoice(p, f"installed vllm {version}", warning, version)
    version = sglang.installed_engine_version(version_of)
    if version is not None:
        p, warning = profile_for_version(version, "sglang")
        return ProfileChoice(p, f"installed sglang {version} (no vllm)", warning, version)
    return ProfileChoice(PROFILES[NEWEST], "no vllm installed: the newest profile")


def default_config(M: int, E: int, N: int, K: int, topk: int, dtype: Optional[str] = None,
                   block_shape=None, heuristic: str = "2026"):
    """The default config of the engine whose rule `heuristic` names (a profile's `heuristic`):
    SGLang's rule for "sglang", vLLM's ("2025", "2026") otherwise (`vllm.default_config`)."""
    mod = sglang if heuristic in sglang.HEURISTICS else vllm
    return mod.default_config(M, E, N, K, topk, dtype, block_shape, heuristic=heuristic)
