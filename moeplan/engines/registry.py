"""Every engine profile moeplan knows, and which one a command uses: `--engine NAME`, else the
installed engine's (its version read from package metadata, never by importing it), else the
newest. Adding an engine is adding its module beside `vllm.py` and listing its profiles here.

Pure: no I/O at import, no torch/triton.
"""

from __future__ import annotations

from typing import Callable, Optional

from moeplan.engines import vllm
from moeplan.engines.profile import EngineError, EngineProfile, ProfileChoice, parse_version

PROFILES: dict[str, EngineProfile] = dict(vllm.PROFILES)
NEWEST = max(PROFILES.values(), key=lambda p: p.first).name


def get_profile(name: str) -> EngineProfile:
    """The profile called `name`; EngineError (one line) naming the valid ones otherwise."""
    p = PROFILES.get(name.strip().lower()) if isinstance(name, str) else None
    if p is None:
        raise EngineError(f"--engine {name!r} is not a known engine profile; valid: {', '.join(PROFILES)}")
    return p


def profile_for_version(version: str) -> tuple[EngineProfile, Optional[str]]:
    """The profile of an engine release, and a warning line when it is only the nearest one."""
    v = parse_version(version)
    newest = PROFILES[NEWEST]
    if v is None:
        return newest, f"the installed vllm version {version!r} cannot be read; using the newest profile {newest.name}"
    for p in sorted(PROFILES.values(), key=lambda p: p.first, reverse=True):
        if v >= p.first:
            if p.last is None and v > p.first and p is newest:
                return p, (f"vllm {version} is newer than the newest profile {p.name}; using {p.name}")
            if p.last is not None and v > p.last:
                # between two profiles' ranges: the older release's behaviour is the nearer guess
                return p, (f"vllm {version} lies between the profiles' release ranges; using {p.name} "
                           f"({p.releases.split(':')[0]})")
            return p, None
    oldest = min(PROFILES.values(), key=lambda p: p.first)
    return oldest, f"vllm {version} is older than the oldest profile {oldest.name}; using {oldest.name}"


def choose_profile(explicit: Optional[str] = None,
                   version_of: Optional[Callable[[str], Optional[str]]] = None) -> ProfileChoice:
    """--engine NAME if given; else the installed engine's profile; else the newest."""
    if explicit is not None:
        if not explicit.strip():
            raise EngineError(f"--engine '' is empty; valid: {', '.join(PROFILES)}")
        p = get_profile(explicit)
        return ProfileChoice(p, f"--engine {p.name}")
    version = vllm.installed_engine_version(version_of)
    if version is not None:
        p, warning = profile_for_version(version)
        return ProfileChoice(p, f"installed vllm {version}", warning, version)
    return ProfileChoice(PROFILES[NEWEST], "no vllm installed: the newest profile")
