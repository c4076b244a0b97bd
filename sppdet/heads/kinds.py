"""The registry of head kinds: what a model directory's ``head`` (config.json) means.

Each kind says what scores the windows and which files hold it; the model directory
(``heads.model_dir``), the torch scorer (``heads.scoring``) and the training commands look
the kind up here instead of testing names. Adding a kind is one ``HeadSpec`` in ``HEADS``
(and the code for what is new about it).
"""

from __future__ import annotations

from dataclasses import dataclass

from sppdet.errors import ModelFormatError, SppdetError


@dataclass(frozen=True)
class HeadSpec:
    """One head kind.

    svm_input: what the linear SVMs (``heads.npz``) read: ``"pool"`` (the scaled pooled
        features) or ``"fc7"`` (the scaled fc7 outputs of the fine-tuned fc layers); None
        when the fc layers' own softmax classifier scores the windows (no SVMs).
    fc_layers: the model holds fine-tuned fc layers (``fc.npz``).
    """

    name: str
    description: str
    svm_input: str | None
    fc_layers: bool

    @property
    def svms(self) -> bool:
        """Scores come from per-class linear SVMs (trained by `sppdet train-svm`)."""
        return self.svm_input is not None

    @property
    def classifier(self) -> bool:
        """Scores are the fc layers' (C + 1)-way softmax probabilities, background dropped."""
        return self.svm_input is None


HEADS: dict[str, HeadSpec] = {
    spec.name: spec
    for spec in (
        HeadSpec("pool", "linear SVMs on scaled pooled features", svm_input="pool", fc_layers=False),
        HeadSpec("fc7", "linear SVMs on fc7 of fine-tuned fc layers", svm_input="fc7", fc_layers=True),
        HeadSpec("softmax", "the fine-tuned network's own softmax classifier and box deltas "
                            "(Fast R-CNN's)", svm_input=None, fc_layers=True),
    )
}

# The kinds `sppdet train-svm` trains (the others come from fine-tuning), and its default.
SVM_HEADS: tuple[str, ...] = tuple(name for name, spec in HEADS.items() if spec.svms)
DEFAULT_SVM_HEAD = "pool"
# The kinds whose model directory holds fine-tuned fc layers.
FC_HEADS: tuple[str, ...] = tuple(name for name, spec in HEADS.items() if spec.fc_layers)


def head_spec(name: object, where: str, error: type[SppdetError] = ModelFormatError) -> HeadSpec:
    """The registered kind ``name``; ``error`` naming ``where`` (a config file) and the value
    when there is none."""
    spec = HEADS.get(name) if isinstance(name, str) else None
    if spec is None:
        raise error(f"{where}: unknown head {name!r}; known heads: {', '.join(HEADS)}")
    return spec
