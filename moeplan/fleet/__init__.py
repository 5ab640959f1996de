"""Tables for a whole fleet: matrix files (models x layouts x dtypes x devices) and their
expansion into distinct tables and shards (`matrix`), each table's status in the lookup folders
and what `tune --matrix` makes on this machine (`status`), and copying the tables a layout or a
matrix looks up into one folder for the engine (`export`), and the GPU time the missing and stale
tables would take, from moeplan's own measured tuning times (`estimate`).

May import: `moeplan.base`, `model`, `engines`, `tables`, `layout`. Pure: no torch or triton.
"""
