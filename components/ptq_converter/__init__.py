"""PTQConverter: post-training quantization to TFLite with Beam-sampled calibration data."""
