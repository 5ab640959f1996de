"""The bottom layer, which every other package may import: domain errors (`errors`), the one
input layer every file and value passes through (`safeio`), every default data path (`paths`),
the local GPU's name read with nvidia-smi (`gpu`), and the record of what a run created, so a
failed run removes only that (`ledger`).

Imports only the standard library. No I/O at import.
"""
