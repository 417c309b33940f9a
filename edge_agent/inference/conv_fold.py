"""Two exact rewrites of convolutions in ONNX bytes, for patterns ONNX Runtime's CPU kernels handle badly.

Folding (``fold_input_depthwise_convs``). Each of FSA-Net's two streams opens with a separable convolution
on the 3-channel face crop: a depthwise 3x3 (one filter per colour channel, with bias), then a pointwise
1x1 (3 -> 16, with bias), nothing in between. Both are linear, so together they are one dense 3x3
convolution, 3 -> 16, with weights ``P[o, c] * D[c, kh, kw]`` and bias ``P @ b_D + b_P`` (the zero padding
of the input passes through the per-pixel 1x1 unchanged). ONNX Runtime has no blocked kernel for a
depthwise convolution over 3 channels: the pair took 1.3-1.6 ms of a network's 13.6 ms for 26 faces;
folded, the two networks side by side took 18.9 instead of 19.8 ms with detection (crowd photo, 2 cores).
Outputs differ by < 1e-4 degrees.

Merging (``merge_sibling_separable_convs``). YuNet ends, at each of its three strides, in four separable
heads on the same feature map: a 1x1 (64 -> 1, 1, 4 and 10 channels) then a depthwise 3x3 on those
channels. ONNX Runtime runs channel counts that are not a multiple of 8 outside its blocked (NCHWc)
kernels, with a layout change around each: 24 small convolutions. Stacked along the output channels they
are one 1x1 (64 -> 16) and one depthwise 3x3 over 16 channels, then a Split back into the four tensors,
each channel computed from exactly the same weights as before. YuNet's run at 640x480 on 2 cores: 4.66
instead of 5.36 ms (1 core: 6.23 instead of 7.02); outputs differ by < 2e-6. INT8 quantization leaves the
stacked nodes (``STACKED`` in their names) in float: one activation scale for channels as unlike as
logits and landmark offsets cost accuracy the heads apart did not lose.

Pure: bytes in, bytes out, no ``onnx`` package (inference/onnx_wire.py). Only the nodes rewritten and
their weights change; everything else keeps its bytes. A model without the pattern comes back unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edge_agent.errors import ModelError
from edge_agent.inference.onnx_wire import (
    ATTRIBUTE_INT,
    ATTRIBUTE_INTS,
    ATTRIBUTE_NAME,
    ATTRIBUTE_STRING,
    ATTRIBUTE_TYPE,
    ATTRIBUTE_TYPE_INT,
    ATTRIBUTE_TYPE_INTS,
    GRAPH_INITIALIZER,
    GRAPH_INPUT,
    GRAPH_NODE,
    GRAPH_OUTPUT,
    GRAPH_VALUE_INFO,
    LENGTH,
    MODEL_GRAPH,
    MODEL_OPSET_IMPORT,
    NODE_ATTRIBUTE,
    NODE_DOMAIN,
    NODE_INPUT,
    NODE_NAME,
    NODE_OP_TYPE,
    NODE_OUTPUT,
    OPSET_DOMAIN,
    OPSET_VERSION,
    TENSOR_DATA_LOCATION,
    TENSOR_DATA_TYPE,
    TENSOR_DIMS,
    TENSOR_FLOAT_DATA,
    TENSOR_NAME,
    TENSOR_RAW_DATA,
    VALUE_NAME,
    VARINT,
    Field,
    encode_fields,
    encode_varint,
    ints,
    only,
    parse_fields,
    string,
    strings,
)

_FLOAT = 1  # TensorProto.DataType.FLOAT
# In the name of every node and tensor merge_sibling_separable_convs makes: INT8 quantization keeps those
# nodes in float (inference/quantize.py).
STACKED = ".stacked_"


@dataclass
class _Node:
    index: int  # position among the graph's fields
    fields: list[Field]
    inputs: list[str]
    outputs: list[str]
    op_type: str  # "Conv" only when it is the standard ONNX operator (default domain)
    attributes: dict[str, list[Field]]

    @classmethod
    def parse(cls, index: int, data: bytes) -> _Node:
        fields = parse_fields(data)
        attributes = {}
        for number, wire, value in fields:
            if number == NODE_ATTRIBUTE and wire == LENGTH:
                attribute = parse_fields(value)
                attributes[string(attribute, ATTRIBUTE_NAME)] = attribute
        return cls(
            index,
            fields,
            strings(fields, NODE_INPUT),
            strings(fields, NODE_OUTPUT),
            string(fields, NODE_OP_TYPE) if string(fields, NODE_DOMAIN) in ("", "ai.onnx") else "",
            attributes,
        )

    def int_attribute(self, name: str, default: int) -> int:
        found = self.attributes.get(name)
        return default if found is None else (ints(found, ATTRIBUTE_INT) or [default])[-1]

    def window(self) -> list[list[Field]]:
        """A Conv's attributes but its group: kernel, pads, strides, dilations."""
        return [attribute for name, attribute in self.attributes.items() if name != "group"]

    def ints_attribute(self, name: str) -> list[int] | None:
        found = self.attributes.get(name)
        return None if found is None else ints(found, ATTRIBUTE_INTS)


def _tensor(data: bytes) -> tuple[str, np.ndarray]:
    fields = parse_fields(data)
    name = string(fields, TENSOR_NAME)
    if ints(fields, TENSOR_DATA_TYPE) != [_FLOAT] or ints(fields, TENSOR_DATA_LOCATION) not in ([], [0]):
        return name, np.empty(0, np.float32)  # not a float tensor stored in the file: not ours to fold
    dims = ints(fields, TENSOR_DIMS)
    raw = [v for n, w, v in fields if n == TENSOR_RAW_DATA and w == LENGTH]
    if raw:
        values = np.frombuffer(raw[-1], dtype="<f4")
    else:
        packed = b"".join(v for n, w, v in fields if n == TENSOR_FLOAT_DATA and w == LENGTH)
        values = np.frombuffer(packed, dtype="<f4")
    if values.size != int(np.prod(dims)):
        raise ValueError(f"tensor {name!r} holds {values.size} values for dims {dims}")
    return name, values.reshape(dims)


_INT64 = 7  # TensorProto.DataType.INT64


def _encode_tensor(name: str, array: np.ndarray) -> bytes:
    int64 = array.dtype == np.int64
    fields: list[Field] = [(TENSOR_DIMS, VARINT, encode_varint(d)) for d in array.shape]
    fields += [
        (TENSOR_DATA_TYPE, VARINT, encode_varint(_INT64 if int64 else _FLOAT)),
        (TENSOR_NAME, LENGTH, name.encode()),
        (TENSOR_RAW_DATA, LENGTH, array.astype("<i8" if int64 else "<f4").tobytes()),
    ]
    return encode_fields(fields)


def _attribute(name: str, value: int | list[int]) -> list[Field]:
    if isinstance(value, int):
        return [
            (ATTRIBUTE_NAME, LENGTH, name.encode()),
            (ATTRIBUTE_INT, VARINT, encode_varint(value)),
            (ATTRIBUTE_TYPE, VARINT, encode_varint(ATTRIBUTE_TYPE_INT)),
        ]
    return [(ATTRIBUTE_NAME, LENGTH, name.encode())] + [
        (ATTRIBUTE_INTS, VARINT, encode_varint(v)) for v in value
    ] + [(ATTRIBUTE_TYPE, VARINT, encode_varint(ATTRIBUTE_TYPE_INTS))]


def _rewritten(
    node: _Node,
    inputs: list[str],
    outputs: list[str] | None = None,
    attributes: list[list[Field]] | None = None,
    name: str | None = None,
) -> bytes:
    """``node`` with new inputs (and outputs, attributes, name), the rest as it was."""
    new: dict[int, list[str] | None] = {NODE_INPUT: inputs, NODE_OUTPUT: outputs}
    if name is not None:
        new[NODE_NAME] = [name]
    fields: list[Field] = []
    for number, wire, value in node.fields:
        names = new.get(number)
        if names is not None:
            fields += [(number, LENGTH, n.encode()) for n in names]
            new[number] = []  # in place of the first of the old names, the others dropped
        elif number != NODE_ATTRIBUTE or attributes is None:
            fields.append((number, wire, value))
    fields += [(number, LENGTH, n.encode()) for number, names in new.items() if names for n in names]
    fields += [(NODE_ATTRIBUTE, LENGTH, encode_fields(a)) for a in attributes or []]
    return encode_fields(fields)


def _is_plain_pointwise(node: _Node, weight: np.ndarray, channels: int) -> bool:
    return (
        node.op_type == "Conv"
        and weight.ndim == 4
        and weight.shape[1:] == (channels, 1, 1)
        and node.int_attribute("group", 1) == 1
        and not any(node.ints_attribute("pads") or [])
        and set(node.ints_attribute("strides") or [1]) == {1}
        and set(node.ints_attribute("dilations") or [1]) == {1}
        and string(node.attributes.get("auto_pad", []), ATTRIBUTE_STRING) in ("", "NOTSET")
    )


@dataclass
class _Graph:
    model: list[Field]
    fields: list[Field]
    tensors: dict[str, tuple[int, np.ndarray]]  # float initializers: field index, values
    inputs: set[str]
    nodes: list[_Node]
    readers: dict[str, list[_Node]]
    outputs: set[str]

    @classmethod
    def parse(cls, model: bytes) -> _Graph:
        fields = parse_fields(model)
        graph = parse_fields(only(fields, MODEL_GRAPH, "model (no graph)"))
        tensors = {}
        for index, (number, wire, value) in enumerate(graph):
            if number == GRAPH_INITIALIZER and wire == LENGTH:
                name, array = _tensor(value)
                tensors[name] = (index, array)
        nodes = [_Node.parse(i, v) for i, (n, w, v) in enumerate(graph) if n == GRAPH_NODE and w == LENGTH]
        readers: dict[str, list[_Node]] = {}
        for node in nodes:
            for name in node.inputs:
                readers.setdefault(name, []).append(node)
        return cls(fields, graph, tensors, _value_names(graph, GRAPH_INPUT) - set(tensors), nodes, readers,
                   _value_names(graph, GRAPH_OUTPUT))

    def weight(self, name: str) -> np.ndarray:
        return self.tensors.get(name, (0, np.empty(0)))[1]

    def drop(self, removed: list[_Node], edits: dict[int, list[Field]]) -> None:
        """Edits that remove ``removed`` and the weights nothing else reads."""
        gone = {node.index for node in removed}
        for node in removed:
            edits.setdefault(node.index, [])
            for name in node.inputs[1:]:
                if name in self.tensors and all(r.index in gone for r in self.readers.get(name, [])):
                    edits[self.tensors[name][0]] = []

    def rebuilt(self, edits: dict[int, list[Field]], added: list[Field]) -> bytes:
        kept: list[Field] = []
        for index, field in enumerate(self.fields):
            kept += edits.get(index, [field])
        new_graph = encode_fields(kept + added)
        return encode_fields([(n, w, new_graph if n == MODEL_GRAPH else v) for n, w, v in self.model])

    def opset(self) -> int:
        for number, wire, value in self.model:
            if number == MODEL_OPSET_IMPORT and wire == LENGTH:
                entry = parse_fields(value)
                if string(entry, OPSET_DOMAIN) in ("", "ai.onnx"):
                    return (ints(entry, OPSET_VERSION) or [0])[-1]
        raise ValueError("no opset for the default ONNX domain")


def _edited(edit: Callable[[bytes], bytes], model: bytes, where: str) -> bytes:
    try:
        return edit(model)
    except (ValueError, IndexError) as exc:  # IndexError: a node without the inputs or outputs its kind has
        raise ModelError(f"{where} is not a well-formed ONNX model: {exc!r}") from exc


def _value_names(graph: list[Field], number: int) -> set[str]:
    return {string(parse_fields(v), VALUE_NAME) for n, w, v in graph if n == number and w == LENGTH}


def fold_input_depthwise_convs(model: bytes, where: str = "model") -> bytes:
    """``model`` with every depthwise Conv that reads a graph input folded into the 1x1 Conv after it."""
    return _edited(_fold, model, where)


def _fold(model: bytes) -> bytes:
    g = _Graph.parse(model)
    edits: dict[int, list[Field]] = {}
    added: list[Field] = []
    for depthwise in g.nodes:
        if depthwise.op_type != "Conv" or len(depthwise.inputs) < 2 or depthwise.inputs[0] not in g.inputs:
            continue
        d = g.weight(depthwise.inputs[1])
        channels = d.shape[0] if d.ndim == 4 else 0
        if not channels or d.shape[1] != 1 or depthwise.int_attribute("group", 1) != channels:
            continue
        after = g.readers.get(depthwise.outputs[0], [])
        if len(after) != 1 or depthwise.outputs[0] in g.outputs or len(after[0].inputs) < 2:
            continue
        pointwise = after[0]
        p = g.weight(pointwise.inputs[1])
        if pointwise.inputs[0] != depthwise.outputs[0] or not _is_plain_pointwise(pointwise, p, channels):
            continue
        d_bias = _bias(depthwise, g.tensors, channels)
        p_bias = _bias(pointwise, g.tensors, p.shape[0])
        if d_bias is None or p_bias is None:
            continue
        mix = p[:, :, 0, 0].astype(np.float64)
        weight = mix[:, :, None, None] * d[:, 0].astype(np.float64)[None]
        bias = mix @ d_bias.astype(np.float64) + p_bias
        names = [f"{pointwise.inputs[1]}.folded", f"{pointwise.inputs[1]}.folded_bias"]
        g.drop([depthwise, pointwise], edits)
        # the pointwise conv reading the graph input through the depthwise one's window
        edits[pointwise.index] = [(GRAPH_NODE, LENGTH, _rewritten(pointwise, [depthwise.inputs[0], *names],
                                                                  attributes=depthwise.window()))]
        added += [
            (GRAPH_INITIALIZER, LENGTH, _encode_tensor(names[0], weight)),
            (GRAPH_INITIALIZER, LENGTH, _encode_tensor(names[1], bias)),
        ]
    return g.rebuilt(edits, added) if edits else model


@dataclass
class _Branch:
    pointwise: _Node
    depthwise: _Node
    weights: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # pointwise W, b; depthwise W, b


def _branch(g: _Graph, pointwise: _Node) -> _Branch | None:
    """``pointwise``, a plain 1x1 Conv, and the depthwise Conv that alone reads its output."""
    p = g.weight(pointwise.inputs[1]) if len(pointwise.inputs) > 1 else np.empty(0)
    if p.ndim != 4 or not _is_plain_pointwise(pointwise, p, p.shape[1]):
        return None
    channels = p.shape[0]
    after = g.readers.get(pointwise.outputs[0], [])
    if len(after) != 1 or pointwise.outputs[0] in g.outputs or len(after[0].inputs) < 2:
        return None
    depthwise = after[0]
    d = g.weight(depthwise.inputs[1])
    if (
        depthwise.op_type != "Conv"
        or depthwise.inputs[0] != pointwise.outputs[0]
        or d.ndim != 4
        or d.shape[:2] != (channels, 1)
        or depthwise.int_attribute("group", 1) != channels
    ):
        return None
    p_bias, d_bias = _bias(pointwise, g.tensors, channels), _bias(depthwise, g.tensors, channels)
    if p_bias is None or d_bias is None:
        return None
    return _Branch(pointwise, depthwise, (p, p_bias, d, d_bias))


def merge_sibling_separable_convs(model: bytes, where: str = "model") -> bytes:
    """``model`` with the separable convolutions (1x1, then depthwise) that read one tensor through the
    same window stacked into one pair, followed by a Split into the tensors they made."""
    return _edited(_merge, model, where)


def _merge(model: bytes) -> bytes:
    g = _Graph.parse(model)
    siblings: dict[tuple[object, ...], list[_Branch]] = {}
    for node in g.nodes:
        branch = _branch(g, node)
        if branch is not None:
            window = tuple(sorted(encode_fields(a) for a in branch.depthwise.window()))
            key = (node.inputs[0], branch.weights[0].shape[1], branch.weights[2].shape[2:], window)
            siblings.setdefault(key, []).append(branch)
    taken = set(g.tensors) | {name for node in g.nodes for name in node.inputs + node.outputs}
    edits: dict[int, list[Field]] = {}
    added: list[Field] = []
    gone: set[str] = set()  # the 1x1 outputs stacked away
    for branches in siblings.values():
        first = branches[0]
        stem = f"{first.pointwise.outputs[0]}{STACKED}"
        names = [f"{stem}{part}" for part in ("w1", "b1", "1x1", "w2", "b2", "3x3", "sizes")]
        if len(branches) < 2 or taken & set(names):
            continue
        w1, b1, pointwise_out, w2, b2, depthwise_out, sizes_name = names
        stacked = [np.concatenate([b.weights[i] for b in branches]) for i in range(4)]
        sizes = [b.weights[0].shape[0] for b in branches]
        split_inputs, split_attributes = [depthwise_out], [_attribute("axis", 1)]
        if g.opset() >= 13:  # the sizes became an input in opset 13
            split_inputs.append(sizes_name)
            sizes_tensor = _encode_tensor(split_inputs[1], np.array(sizes, np.int64))
            added.append((GRAPH_INITIALIZER, LENGTH, sizes_tensor))
        else:
            split_attributes.append(_attribute("split", sizes))
        split: list[Field] = [(NODE_INPUT, LENGTH, name.encode()) for name in split_inputs]
        split += [(NODE_OUTPUT, LENGTH, b.depthwise.outputs[0].encode()) for b in branches]
        split += [(NODE_NAME, LENGTH, f"{stem}split".encode()), (NODE_OP_TYPE, LENGTH, b"Split")]
        split += [(NODE_ATTRIBUTE, LENGTH, encode_fields(a)) for a in split_attributes]
        g.drop([n for b in branches for n in (b.pointwise, b.depthwise)], edits)
        # the three in place of the first 1x1: its input exists there, the Split's outputs are read later
        edits[first.pointwise.index] = [
            (GRAPH_NODE, LENGTH, _rewritten(first.pointwise, [first.pointwise.inputs[0], w1, b1],
                                            [pointwise_out], name=pointwise_out)),
            (GRAPH_NODE, LENGTH, _rewritten(first.depthwise, [pointwise_out, w2, b2], [depthwise_out],
                                            [*first.depthwise.window(), _attribute("group", sum(sizes))],
                                            name=depthwise_out)),
            (GRAPH_NODE, LENGTH, encode_fields(split)),
        ]
        added += [(GRAPH_INITIALIZER, LENGTH, _encode_tensor(name, array))
                  for name, array in zip((w1, b1, w2, b2), stacked, strict=True)]
        gone |= {b.pointwise.outputs[0] for b in branches}
    for index, (number, _, value) in enumerate(g.fields):  # shapes recorded for tensors no longer made
        if number == GRAPH_VALUE_INFO and gone and string(parse_fields(value), VALUE_NAME) in gone:
            edits[index] = []
    return g.rebuilt(edits, added) if edits else model


def _bias(node: _Node, tensors: dict[str, tuple[int, np.ndarray]], size: int) -> np.ndarray | None:
    """The Conv's bias, zeros when it has none; None when it is not a plain float vector of ``size``."""
    if len(node.inputs) < 3 or not node.inputs[2]:
        return np.zeros(size)
    bias = tensors.get(node.inputs[2], (0, np.empty(0)))[1]
    return bias.astype(np.float64) if bias.shape == (size,) else None
