"""What the optimizer components (Pruner, Clusterer, QATTrainer) share.

- config.py: FineTuneConfig, the base of the optimizers' own configs, and the layer selection;
- training.py: fine_tune() on any tf.data input (no TFX; the benchmark suite uses it too);
- component.py: the one spec and constructor of every optimizer component;
- executor.py: the one Do() (load, bind the user's input_fn to the Examples, optimize, save).
"""
