"""Saving models whose layers changed shape (pruned, sparsified, rewired), without pickle.

``torch.save(model)`` pickles classes and breaks when code moves; a plain ``state_dict``
cannot be loaded back into the original model class once pruning has changed layer sizes
or types. :func:`save` writes the ``state_dict`` together with each layer's topology (type,
sizes, wiring names) as plain containers and tensors; :func:`load` rebuilds those layers
inside a freshly constructed model of the original class, then loads the weights. Two file
formats: torch's (loads with ``torch.load(path, weights_only=True)``) and, for a path ending
in ``.safetensors``, safetensors, with the topology as JSON in the file's metadata.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from torch import nn

from torchwire import _surgery

__all__ = ["load", "save"]

_FORMAT = "torchwire.model/1"
_SAFETENSORS = ".safetensors"
_BY_NAME = {kind.__name__: a for kind, a in _surgery.ADAPTERS.items()}
Path = str | os.PathLike[str]


def save(model: nn.Module, path: Path) -> None:
    """Save ``model``'s weights and the topology of its layers to ``path``.

    The topology of every ``nn.Linear``, :class:`~torchwire.BlockLinear`,
    :class:`~torchwire.SparseLinear`, :class:`~torchwire.MultiLinear`, ``nn.Conv1d/2d/3d``
    and ``nn.BatchNorm1d/2d/3d`` is kept: its type, sizes and wiring (read from the index
    buffers of the ``state_dict``, so nothing is stored twice; a wiring's input and output
    names are kept here). Only dicts, lists, strings, numbers and tensors are written.

    A path ending in ``.safetensors`` writes a safetensors file (``pip install
    torchwire[safetensors]``): the ``state_dict``'s tensors, with the topology as JSON in the
    file's metadata, the format Hugging Face-style sharing expects. Tensors that share
    memory (tied weights) are stored once and tied again by :func:`load`. Any other path
    gets torch's format.

    Args:
        model: the model, for example the result of :func:`torchwire.prune.neurons`.
        path: the file to write.

    Examples::

        >>> import tempfile, os
        >>> model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
        >>> pruned = torchwire.prune.dead_neurons(torchwire.sparsify(model, density=0.05))
        >>> path = os.path.join(tempfile.mkdtemp(), "pruned.pt")
        >>> torchwire.save(pruned, path)
        >>> fresh = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
        >>> restored = torchwire.load(path, fresh)
        >>> x = torch.randn(3, 16)
        >>> torch.equal(restored(x), pruned(x))
        True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"save expected an nn.Module, got {type(model).__name__}")
    topology = {}
    for name, module in model.named_modules():
        spec = _spec(module)
        if spec is not None:
            topology[name] = spec
    state = model.state_dict()
    if os.fspath(path).endswith(_SAFETENSORS):
        _save_safetensors(state, topology, path)
        return
    torch.save({"format": _FORMAT, "topology": topology, "state_dict": state}, path)


def load(
    path: Path, model: nn.Module, *, map_location: Any = None, strict: bool = True
) -> nn.Module:
    """Load a file written by :func:`save` into ``model``, a new instance of the saved class.

    Every layer whose saved topology differs from ``model``'s is rebuilt to the saved one
    (on the device and dtype of the layer it replaces, in its train/eval mode and with its
    frozen parameters frozen), then the ``state_dict`` is loaded.
    Reads with ``torch.load(weights_only=True)``, or safetensors for a path ending in
    ``.safetensors``: no code from the file runs.

    Args:
        path: the file.
        model: a model of the class that was saved (typically freshly constructed); it is
            changed in place and returned.
        map_location: passed to ``torch.load``; for safetensors, a device (or its name) to
            load the tensors on (default: the CPU).
        strict: passed to ``load_state_dict``.

    Returns:
        ``model``, holding the saved layers and weights.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"load expected an nn.Module to load into, got {type(model).__name__}")
    if os.fspath(path).endswith(_SAFETENSORS):
        payload = _load_safetensors(path, map_location)
    else:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        raise ValueError(
            f"{os.fspath(path)!r} was not written by torchwire.save (expected format "
            f"{_FORMAT!r}); load a plain state_dict with model.load_state_dict(torch.load(...))"
        )
    state = payload["state_dict"]
    changed: list[tuple[str, dict[str, Any], nn.Module]] = []
    for name, spec in payload["topology"].items():
        try:
            current = model.get_submodule(name)
        except AttributeError:
            raise ValueError(
                f"the saved model has a {spec['type']} at {name!r}, but {type(model).__name__} "
                "has no such submodule; load into an instance of the class that was saved"
            ) from None
        if _spec(current) != spec:
            label = f"layer {name!r} ({type(current).__name__})"
            _surgery.check_plain(current, label, "load")  # before any layer is replaced
            changed.append((name, spec, current))
    for name, spec, current in changed:
        _set(model, name, _build(spec, state, name, current))
    model.load_state_dict(state, strict=strict)
    return model


def _spec(m: Any) -> dict[str, Any] | None:
    """The topology of a layer surgery knows (its type and constructor arguments, as plain
    values), or ``None``."""
    found = _surgery.adapter(m)
    return None if found is None else {"type": found.kind.__name__, **found.config(m)}


def _build(spec: dict[str, Any], state: dict[str, Any], name: str, like: nn.Module) -> nn.Module:
    """A new layer of ``spec``, on ``like``'s device and dtype, rebuilt as surgery rebuilds
    (``like``'s train/eval mode and frozen parameters)."""
    tensors = [*like.parameters(), *like.buffers()]
    floats = [t for t in tensors if t.is_floating_point()]
    device = tensors[0].device if tensors else None
    dtype = floats[0].dtype if floats else None
    kind = spec["type"]
    found = _BY_NAME.get(kind)
    if found is None:
        raise ValueError(f"unknown layer type {kind!r} in the saved topology of {name!r}")
    config = {k: v for k, v in spec.items() if k != "type"}
    if found.saved_structure is not None:  # the state_dict holds the rest of the structure
        config |= found.saved_structure(config, state, f"{name}." if name else "")
    return _surgery.rebuilt(found.build(config, device, dtype), like)


def _set(model: nn.Module, name: str, new: nn.Module) -> None:
    if name == "":
        raise ValueError(
            f"the saved model is itself a {type(new).__name__} of another shape; construct "
            "it with the saved sizes instead of loading into a different one"
        )
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent), attr, new)


def _safetensors() -> Any:
    """The safetensors package (with its torch module), or a clear error naming the extra."""
    try:
        import safetensors
        import safetensors.torch
    except ImportError:
        raise ImportError(
            "saving or loading a .safetensors file needs the safetensors package: "
            "pip install 'torchwire[safetensors]' (or save to a path not ending in .safetensors)"
        ) from None
    return safetensors


def _save_safetensors(state: dict[str, Any], topology: dict[str, Any], path: Path) -> None:
    """``state``'s tensors in a safetensors file; tensors sharing memory are written once,
    under their first name, and the other names listed in the metadata."""
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    first: dict[tuple[Any, ...], str] = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(
                f"safetensors stores tensors only, but the state_dict entry {key!r} is a "
                f"{type(value).__name__}; save to a .pt path instead"
            )
        storage = value.untyped_storage().data_ptr()
        view = (storage, value.storage_offset(), value.shape, value.stride(), value.dtype)
        if value.numel() and view in first:
            aliases[key] = first[view]
            continue
        first[view] = key
        tensors[key] = value.detach().contiguous()
    metadata = {
        "format": _FORMAT,
        "topology": json.dumps(topology),
        "aliases": json.dumps(aliases),
    }
    _safetensors().torch.save_file(tensors, os.fspath(path), metadata=metadata)


def _load_safetensors(path: Path, map_location: Any) -> dict[str, Any]:
    """The payload of a safetensors file written by :func:`save`, as ``torch.load`` gives it."""
    if map_location is not None and not isinstance(map_location, (str, torch.device)):
        raise TypeError(
            f"for a .safetensors file, map_location must be a device or its name, got "
            f"{type(map_location).__name__}"
        )
    device = "cpu" if map_location is None else str(torch.device(map_location))
    with _safetensors().safe_open(os.fspath(path), framework="pt", device=device) as f:
        metadata = f.metadata() or {}
        state = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (no __iter__)
    if metadata.get("format") != _FORMAT:
        return {}
    for key, target in json.loads(metadata.get("aliases", "{}")).items():
        state[key] = state[target]
    return {
        "format": _FORMAT,
        "topology": json.loads(metadata["topology"]),
        "state_dict": state,
    }
