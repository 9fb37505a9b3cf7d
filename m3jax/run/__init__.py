"""A run: its config (load, override, freeze, validate) and its workdir (save, reload).

``m3jax.run.config``: the one config system; ``m3jax.run.loading``: a trained workdir
loaded for evaluation, generation and probes; ``m3jax.run.sweep``: sweeps. What ``train``
records in a workdir, and the checks that keep a workdir one run, are
``m3jax.train.workdir``.
"""
