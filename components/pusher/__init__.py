"""TFLitePusher: publishes blessed TFLite models through a Publisher."""
