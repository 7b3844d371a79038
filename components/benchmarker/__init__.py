"""DeviceBenchmarker: latency, memory and size of TFLite models, against device budgets."""
