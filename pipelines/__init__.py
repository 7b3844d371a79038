"""tfx-edge pipelines: one create_pipeline(...) and thin runner entry points."""
import os

# Keras 2 for tensorflow-model-optimization; must precede the first tensorflow import.
os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
