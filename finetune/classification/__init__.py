"""Frozen-feature classification protocols: linear evaluation and few-shot logistic regression."""
