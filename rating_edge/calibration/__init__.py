"""Calibration sets, INT8 quantization (Q/DQ and U8S8) and TensorRT engine builds."""
