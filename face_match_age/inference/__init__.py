"""Inference: the FaceAnalyzer API, infer.py's batch modes and the annotated comparison picture."""
