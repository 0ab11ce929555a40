"""Evaluation: metrics on plain arrays and verification thresholds calibrated per age-gap band."""
