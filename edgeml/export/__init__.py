"""ONNX export of a bundle's edge segments and exit heads (fp32, optional int8 QDQ)."""
