"""How train.py saves its progress: atomic checkpoints, last.ckpt and a checkpoint on a stop signal."""
