"""Whole pipeline stages as library functions; each ``sppdet`` command is a thin layer of
option parsing over one of them (``sppdet.train_svm``, ``sppdet.evaluate``, ...)."""
