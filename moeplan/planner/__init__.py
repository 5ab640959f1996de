"""`moeplan plan` and `moeplan report`: every valid layout on G GPUs ranked by memory, predicted
MoE time and communication (`plan`, pure), the GPU facts it uses (`hardware`), the KV-cache capacity of a layout (`kvcache`), the tables and
CSVs it reads from disk (`data`), and the per-table pictures of `report` (`report`, matplotlib on
use only).

May import: `moeplan.base`, `model`, `engines`, `tables`, `layout`, `fleet`. No torch or triton.
"""
