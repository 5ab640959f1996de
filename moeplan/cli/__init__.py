"""The command line: the typer app and its one error handler (`app`), the options several
commands share (`options`), one module per command group (`resolve`: resolve, models; `tune`;
`tables`: show, verify, diff; `fleet`: matrix; `export`; `plan`: plan, report, with `plan_view`
rendering plan's tables) and rich rendering (`render`). A command parses options, calls one library function and prints.

May import every package. Only `tune` and `diff --measure` load torch or triton, when they run.
"""
