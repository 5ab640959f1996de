"""The command line: the typer app and its one error handler (`app`), the options several
commands share (`options`), one module per command group (`resolve`: resolve, models; `tune`;
`tables`: show, verify, diff; `fleet`: matrix; `plan`: plan, report) and rich rendering
(`render`). A command parses options, calls one library function and prints.

May import every package. Only `tune` and `diff --measure` load torch or triton, when they run.
"""
