"""Load a converted state dict only if it covers the model exactly: no missing, extra or misshapen tensor."""

from __future__ import annotations


def load_exact(model, state_dict: dict, what: str) -> None:
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state_dict)), sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{what}: missing {missing}, unexpected {unexpected}")
    for name, param in expected.items():
        if param.shape != state_dict[name].shape:
            raise ValueError(f"{name}: model wants {tuple(param.shape)}, converted {tuple(state_dict[name].shape)}")
    model.load_state_dict(state_dict, strict=True)
