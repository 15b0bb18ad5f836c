"""Training and evaluation engine: the step, the loop, run directories, checkpoints, evaluation, commands."""
