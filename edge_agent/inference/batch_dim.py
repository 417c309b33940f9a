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

# Field numbers from onnx/onnx.proto (stable since IR version 3).
_MODEL_GRAPH = 7
_GRAPH_INITIALIZER, _GRAPH_INPUT, _GRAPH_OUTPUT = 5, 11, 12
_TENSOR_NAME = 8
_VALUE_NAME, _VALUE_TYPE = 1, 2
_TYPE_TENSOR = 1
_TENSOR_SHAPE = 2
_SHAPE_DIM = 1
_DIM_VALUE, _DIM_PARAM = 1, 2

_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5

Field = tuple[int, int, bytes]  # field number, wire type, value (payload for length-delimited fields)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def parse_fields(data: bytes) -> list[Field]:
    """The top-level fields of one message, in file order; ``ValueError`` when the bytes are malformed."""
    fields: list[Field] = []
    pos = 0
    while pos < len(data):
        tag, pos = _varint(data, pos)
        number, wire = tag >> 3, tag & 7
        if wire == _VARINT:
            _, end = _varint(data, pos)
        elif wire == _LENGTH:
            size, pos = _varint(data, pos)
            end = pos + size
        elif wire in (_FIXED64, _FIXED32):
            end = pos + (8 if wire == _FIXED64 else 4)
        else:  # groups (3, 4) are not used by ONNX
            raise ValueError(f"unsupported wire type {wire} in field {number}")
        if end > len(data):
            raise ValueError(f"field {number} runs past the end of its message")
        fields.append((number, wire, data[pos:end]))
        pos = end
    return fields


def encode_fields(fields: list[Field]) -> bytes:
    parts: list[bytes] = []
    for number, wire, value in fields:
        parts.append(_encode_varint(number << 3 | wire))
        if wire == _LENGTH:
            parts.append(_encode_varint(len(value)))
        parts.append(value)
    return b"".join(parts)


def _only(fields: list[Field], number: int, what: str) -> bytes:
    found = [value for n, wire, value in fields if n == number and wire == _LENGTH]
    if len(found) != 1:
        raise ValueError(f"{what}: expected one field {number}, found {len(found)}")
    return found[0]


def _replace(fields: list[Field], number: int, new: bytes) -> list[Field]:
    return [(n, w, new if n == number and w == _LENGTH else v) for n, w, v in fields]


def _dynamic_dim(dim: bytes, param: str, where: str) -> bytes:
    fields = parse_fields(dim)
    if any(n == _DIM_PARAM for n, _, _ in fields):
        return dim  # already symbolic
    values = [v for n, w, v in fields if n == _DIM_VALUE and w == _VARINT]
    size = _varint(values[-1], 0)[0] if values else None
    if size != 1:
        raise ModelError(f"{where}: the batch dimension is {size}, not 1; it cannot simply be made dynamic")
    kept = [f for f in fields if f[0] != _DIM_VALUE]
    return encode_fields([(_DIM_PARAM, _LENGTH, param.encode()), *kept])


def _dynamic_value_info(info: bytes, param: str, where: str) -> bytes:
    fields = parse_fields(info)
    name = _only(fields, _VALUE_NAME, where).decode("utf-8", "replace")
    where = f"{where} {name!r}"
    type_fields = parse_fields(_only(fields, _VALUE_TYPE, where))
    tensor_fields = parse_fields(_only(type_fields, _TYPE_TENSOR, f"{where} (not a tensor)"))
    shape_fields = parse_fields(_only(tensor_fields, _TENSOR_SHAPE, f"{where} (no shape)"))
    first = next((i for i, (n, w, _) in enumerate(shape_fields) if n == _SHAPE_DIM and w == _LENGTH), None)
    if first is None:
        raise ModelError(f"{where}: a scalar has no batch dimension")
    shape_fields[first] = (_SHAPE_DIM, _LENGTH, _dynamic_dim(shape_fields[first][2], param, where))
    tensor = encode_fields(_replace(tensor_fields, _TENSOR_SHAPE, encode_fields(shape_fields)))
    type_ = encode_fields(_replace(type_fields, _TYPE_TENSOR, tensor))
    return encode_fields(_replace(fields, _VALUE_TYPE, type_))


def _initializer_names(graph: list[Field]) -> set[str]:
    names = set()
    for number, wire, value in graph:
        if number == _GRAPH_INITIALIZER and wire == _LENGTH:
            names |= {v.decode("utf-8", "replace") for n, _, v in parse_fields(value) if n == _TENSOR_NAME}
    return names


def _graph_field(field: Field, constants: set[str], param: str, where: str) -> Field:
    number, wire, value = field
    if number not in (_GRAPH_INPUT, _GRAPH_OUTPUT) or wire != _LENGTH:
        return field
    name = _only(parse_fields(value), _VALUE_NAME, where).decode("utf-8", "replace")
    if number == _GRAPH_INPUT and name in constants:
        return field
    return number, wire, _dynamic_value_info(value, param, where)


def make_batch_dynamic(model: bytes, where: str = "model", param: str = "batch") -> bytes:
    """``model`` with dimension 0 of every graph input and output named ``param``; weights untouched.

    Inputs that are initializers (older exports list them among the inputs) keep their shapes.
    """
    try:
        fields = parse_fields(model)
        graph = parse_fields(_only(fields, _MODEL_GRAPH, f"{where} (no graph)"))
        constants = _initializer_names(graph)
        edited = [_graph_field(field, constants, param, where) for field in graph]
        return encode_fields(_replace(fields, _MODEL_GRAPH, encode_fields(edited)))
    except ValueError as exc:
        raise ModelError(f"{where} is not a well-formed ONNX model: {exc}") from exc
