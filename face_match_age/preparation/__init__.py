"""data_prep.py's stages: safe archive unpacking, dataset labels, face crops, identity-disjoint splits."""
