"""Make the batch dimension of an ONNX model symbolic, editing the protobuf wire format directly.

Published exports often fix the batch at 1 although nothing inside the graph depends on it (FSA-Net
reshapes through ``Shape`` nodes). Marking dimension 0 of the graph inputs and outputs as ``batch`` lets a
whole frame's faces run in one call. Only the few messages on the path to those dimensions are re-encoded;
every other field, the weights included, is copied byte for byte, so the result depends on nothing but
the input bytes (a stable TensorRT cache key) and needs no ``onnx`` package on the board.

Pure: bytes in, bytes out; a malformed file or a batch dimension other than 1 is a :class:`ModelError`.
"""

from __future__ import annotations

from edge_agent.errors import ModelError
from edge_agent.inference.onnx_wire import (
    GRAPH_INITIALIZER,
    GRAPH_INPUT,
    GRAPH_OUTPUT,
    LENGTH,
    MODEL_GRAPH,
    TENSOR_NAME,
    VALUE_NAME,
    VARINT,
    Field,
    encode_fields,
    only,
    parse_fields,
    read_varint,
    replace,
)

_TYPE_TENSOR = 1
_TENSOR_SHAPE = 2
_SHAPE_DIM = 1
_DIM_VALUE, _DIM_PARAM = 1, 2
_VALUE_TYPE = 2


def _dynamic_dim(dim: bytes, param: str, where: str) -> bytes:
    fields = parse_fields(dim)
    if any(n == _DIM_PARAM for n, _, _ in fields):
        return dim  # already symbolic
    values = [v for n, w, v in fields if n == _DIM_VALUE and w == VARINT]
    size = read_varint(values[-1], 0)[0] if values else None
    if size != 1:
        raise ModelError(f"{where}: the batch dimension is {size}, not 1; it cannot simply be made dynamic")
    kept = [f for f in fields if f[0] != _DIM_VALUE]
    return encode_fields([(_DIM_PARAM, LENGTH, param.encode()), *kept])


def _dynamic_value_info(info: bytes, param: str, where: str) -> bytes:
    fields = parse_fields(info)
    name = only(fields, VALUE_NAME, where).decode("utf-8", "replace")
    where = f"{where} {name!r}"
    type_fields = parse_fields(only(fields, _VALUE_TYPE, where))
    tensor_fields = parse_fields(only(type_fields, _TYPE_TENSOR, f"{where} (not a tensor)"))
    shape_fields = parse_fields(only(tensor_fields, _TENSOR_SHAPE, f"{where} (no shape)"))
    first = next((i for i, (n, w, _) in enumerate(shape_fields) if n == _SHAPE_DIM and w == LENGTH), None)
    if first is None:
        raise ModelError(f"{where}: a scalar has no batch dimension")
    shape_fields[first] = (_SHAPE_DIM, LENGTH, _dynamic_dim(shape_fields[first][2], param, where))
    tensor = encode_fields(replace(tensor_fields, _TENSOR_SHAPE, encode_fields(shape_fields)))
    type_ = encode_fields(replace(type_fields, _TYPE_TENSOR, tensor))
    return encode_fields(replace(fields, _VALUE_TYPE, type_))


def _initializer_names(graph: list[Field]) -> set[str]:
    names = set()
    for number, wire, value in graph:
        if number == GRAPH_INITIALIZER and wire == LENGTH:
            names |= {v.decode("utf-8", "replace") for n, _, v in parse_fields(value) if n == TENSOR_NAME}
    return names


def _graph_field(field: Field, constants: set[str], param: str, where: str) -> Field:
    number, wire, value = field
    if number not in (GRAPH_INPUT, GRAPH_OUTPUT) or wire != LENGTH:
        return field
    name = only(parse_fields(value), VALUE_NAME, where).decode("utf-8", "replace")
    if number == GRAPH_INPUT and name in constants:
        return field
    return number, wire, _dynamic_value_info(value, param, where)


def make_batch_dynamic(model: bytes, where: str = "model", param: str = "batch") -> bytes:
    """``model`` with dimension 0 of every graph input and output named ``param``; weights untouched.

    Inputs that are initializers (older exports list them among the inputs) keep their shapes.
    """
    try:
        fields = parse_fields(model)
        graph = parse_fields(only(fields, MODEL_GRAPH, f"{where} (no graph)"))
        constants = _initializer_names(graph)
        edited = [_graph_field(field, constants, param, where) for field in graph]
        return encode_fields(replace(fields, MODEL_GRAPH, encode_fields(edited)))
    except ValueError as exc:
        raise ModelError(f"{where} is not a well-formed ONNX model: {exc}") from exc
