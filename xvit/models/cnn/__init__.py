"""The convolutional systems of supplement Table 1, registered by their papers' names.

``base`` (what the CNNs share: the xvit model interface, init, the classifier head, registration,
ImageNet inflation), ``resnet3d`` (3D ResNet parts: bottleneck, stage, stem, non-local block),
one module per family: ``slowfast``, ``i3d_nl``, ``tea``, ``blvnet``. They use the transformers'
shared parts (``xvit.models.base``, ``layers``, ``registry``, ``weights``); nothing outside this
room imports a CNN module but ``xvit.models.factory``, which registers them.
"""
