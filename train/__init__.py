"""Feather sparse training (arXiv 2310.02448): operators, backbones, schedule, models, loop.

Importing this package loads nothing heavy; submodules import torch when they need it.
"""
