"""Framework integrations, each an optional extra that imports its framework only when used.

* :mod:`bls.integrations.lightning` — ``PruningCallback`` for PyTorch Lightning
  (``pip install 'bls-prune[lightning]'``);
* :mod:`bls.integrations.hf` — ``PruningTrainer`` for the Hugging Face ``Trainer`` and
  Accelerate (``pip install 'bls-prune[hf]'``);
* :mod:`bls.integrations.ultralytics` — ``PruningDetectionTrainer`` for Ultralytics YOLO
  detection, one process (``pip install 'bls-prune[ultralytics]'``; needs torchvision).

Importing :mod:`bls` or this package never imports a framework.
"""
