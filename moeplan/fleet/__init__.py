"""Tables for a whole fleet: matrix files (models x layouts x dtypes x devices) and their
expansion into distinct tables and shards (`matrix`), each table's status in the lookup folders
and what `tune --matrix` makes on this machine (`status`).

May import: `moeplan.base`, `model`, `engines`, `tables`, `layout`. Pure: no torch or triton.
"""
