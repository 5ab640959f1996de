"""moeplan: plan and autotune fused-MoE inference.

The planning core (models, parallel, quant, naming) is pure Python: it imports
neither torch nor triton, so `moeplan resolve` starts fast.
"""

__version__ = "0.1.0"
