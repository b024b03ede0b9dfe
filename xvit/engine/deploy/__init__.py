"""The deployment room: a checkpoint as a file another runtime runs.

``export`` (ONNX / pt2 / int8 export with its checks against PyTorch, ``xvit export``),
``onnx_model`` (an exported file under onnxruntime as a model ``xvit eval`` / ``xvit predict``
take). It uses ``xvit.engine.eval.predict`` for the clips it checks with.
"""
