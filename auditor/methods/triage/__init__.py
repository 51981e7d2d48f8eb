"""Mistake triage and data health: whose fault is each mistake, the model's or the data's?

One idea per module: ``label_issues`` (confident learning with cleanlab), ``neighbours`` (cosine
nearest neighbours in the penultimate features), ``ood`` (energy, kNN and Mahalanobis scores and
their calibrated thresholds), ``calibration`` (ECE, reliability, temperature scaling),
``duplicates`` (exact and perceptual-hash duplicates, leakage), ``slices`` (per-class failure
directions with bootstrap intervals) and ``verdicts`` (the rules that join them per mistake).
"""
