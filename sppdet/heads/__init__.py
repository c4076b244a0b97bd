"""Detection heads trained from cached features (no image is read, no conv layer runs).

- ``sources``: what training reads (``FeatureSource`` protocol, ``TrainingImage`` records);
- ``scaling``: the feature scale (mean L2 norm 20);
- ``svm``, ``mining``: liblinear SVMs and one-pass hard-negative mining for all classes;
- ``bbox_regression``: class-specific ridge regression of box deltas;
- ``fc_head``, ``finetune``: fc6/fc7 fine-tuning on pooled features;
- ``train``: the ``train-svm`` pipeline (two passes, checkpoints via ``checkpoint``);
- ``model_dir``: the model directory (``save_model``, ``load_model``, ``DetectorModel``).
"""
