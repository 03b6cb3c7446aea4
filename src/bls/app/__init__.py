"""The ``bls-prune`` application, built on the library core.

The command line (:mod:`bls.app.cli`), the training engine (:mod:`bls.app.train`), the small
models (:mod:`bls.app.models`) and the data loaders (:mod:`bls.app.data`) are one user of the
core, like the examples and benchmarks: they may need more than torch and numpy (scikit-learn's
digits, Pillow, matplotlib, tqdm). The core (``bls`` outside this package) never imports it,
so ``import bls`` stays as light as its two dependencies.
"""
