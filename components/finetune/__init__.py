"""What the optimization components share: fine-tuning config, data, and the executor skeleton."""
