"""Domain errors. The CLI turns every MoeplanError into one stderr line and exit code 2."""


class MoeplanError(Exception):
    """Base class: bad input or an impossible request, reported without a traceback."""

    exit_code = 2


class ModelError(MoeplanError):
    """Unknown model, unreadable or malformed config.json, or a dense model."""


class LayoutError(MoeplanError):
    """A TP/DP/EP layout that the engine would refuse for this model."""


class QuantError(MoeplanError):
    """An invalid quantization combination (dtype, block shape, per-token flags)."""


class TableError(MoeplanError):
    """A malformed tuning table or an unsafe write."""


class TuneError(MoeplanError):
    """A tuning request that cannot run (no GPU, empty search space, ...)."""


class InputError(MoeplanError):
    """A value outside its stated range or grammar, or an unreadable input file (moeplan.safeio)."""


class PlanError(MoeplanError):
    """No valid layout, or a bad plan request (or an unreadable measurements CSV)."""
