"""Code that runs inside the serving images (ONNX Runtime server, storage initializer)."""
