"""FLRDF core: foreground localization + region discriminative feature training.

The package holds everything that is not UI: the model and its pure maths
(suppression, boxes, jigsaw), losses, datasets, the training/evaluation engine,
checkpoints and the command line (``python -m flrdf ...``).
"""

__version__ = "0.1.0"
