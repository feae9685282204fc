"""A run on disk: its identity, results file, checkpoint store and lock.

`identity` (what makes two runs the same run, and the run's name), `results` (results files,
written atomically, never replacing another run's), `store` (orbax checkpoints to save to and
resume from) and `lock` (one process per run folder). May import: `jxhash.errors`,
`jxhash.fileio`, `jxhash.spec`, `jxhash.distributed`; never a method, the trainer or a command.
"""
