"""The supplementary material's three studies as programs (``xvit reproduce``): Table 1 (inference
speed at each model's published test setting), Table 2 (TSM-ViT vs X-ViT, temporal pooling vs
temporal attention, over seeds) and Fig. 1 (accuracy against test views). Each writes
``results.json``, ``results.md`` and a PNG, and continues from its finished units when rerun.
"""
