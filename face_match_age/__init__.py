"""The library behind the scripts at the repository root: imported by them, never run itself.

detection/    finding faces and turning photos and face crops into tensors
network/      the age network, its distribution maths and the pretrained backbone weights
inference/    the Python API (FaceAnalyzer), infer.py's batch modes and the annotated picture
evaluation/   metrics on arrays and the per-age-gap verification thresholds
preparation/  data_prep.py's stages: archives, dataset labels, face crops, splits
training/     how train.py saves its progress
files/        files in and out: downloads, CSV tables, atomic outputs, checkpoint files
device.py     the one device and precision chooser
"""
