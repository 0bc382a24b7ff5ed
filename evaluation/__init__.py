"""Evaluation of generators against held-out real images, in the feature space of a domain classifier.

``classifier`` (the CNN and its files), ``train_classifier`` (how it is made), ``metrics`` (numbers from
the classifier's features), ``sources`` (images from a run or model directory), ``evaluate`` (one evaluation,
model beside the real floor), ``report`` (table, metrics.json, report.md, sample grid),
``cli`` (``gan-eval``).
"""
