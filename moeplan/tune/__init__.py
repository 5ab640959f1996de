"""The autotuner: the search space and its pruning (`space`), search strategies (`search`),
routing draws (`routing`), one table's job (`job`), measuring workers (`worker`, `measure`; its test hooks: injected faults and a cost model, `hooks`),
where measurements run (`backends`, `ray_backend`), checkpoints (`checkpoint`), the per-table lock
(`lock`), the evidence rule (`evidence`: an entry leaves the default config only on an A/B
margin above the noise), the summary (`summary`), the one tuning entry point over table specs (`api`) and the
whole `moeplan tune` as `tune(TuneRequest)` (`run`).

May import every package below it (`base` .. `kernels`); never the CLI. Importing it is cheap:
torch and triton load when a job runs.
"""
