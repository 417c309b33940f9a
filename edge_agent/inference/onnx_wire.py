"""The protobuf wire format of ONNX files: just enough to read and re-encode the messages we edit.

The board derives engine copies of published models (inference/batch_dim.py, inference/conv_fold.py)
without the ``onnx`` package. Fields that an edit does not touch are kept as their original bytes, so
an edit depends on nothing but the input bytes: the same copy on every board, a stable TensorRT cache
key. Every function raises ``ValueError`` on malformed bytes; callers turn that into a ModelError.
"""

from __future__ import annotations

# Field numbers from onnx/onnx.proto (stable since IR version 3).
MODEL_GRAPH, MODEL_OPSET_IMPORT = 7, 8
OPSET_DOMAIN, OPSET_VERSION = 1, 2
GRAPH_NODE, GRAPH_INITIALIZER, GRAPH_INPUT, GRAPH_OUTPUT, GRAPH_VALUE_INFO = 1, 5, 11, 12, 13
NODE_INPUT, NODE_OUTPUT, NODE_NAME, NODE_OP_TYPE, NODE_ATTRIBUTE, NODE_DOMAIN = 1, 2, 3, 4, 5, 7
ATTRIBUTE_NAME, ATTRIBUTE_INT, ATTRIBUTE_STRING, ATTRIBUTE_INTS, ATTRIBUTE_TYPE = 1, 3, 4, 8, 20
ATTRIBUTE_TYPE_INT, ATTRIBUTE_TYPE_INTS = 2, 7  # AttributeProto.AttributeType
TENSOR_DIMS, TENSOR_DATA_TYPE, TENSOR_FLOAT_DATA, TENSOR_NAME, TENSOR_RAW_DATA = 1, 2, 4, 8, 9
TENSOR_DATA_LOCATION = 14
VALUE_NAME = 1

VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5

Field = tuple[int, int, bytes]  # field number, wire type, value (payload for length-delimited fields)


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """The varint at ``pos`` and the position after it."""
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


def encode_varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # int64 fields: two's complement in ten bytes
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
    """The top-level fields of one message, in file order."""
    fields: list[Field] = []
    pos = 0
    while pos < len(data):
        tag, pos = read_varint(data, pos)
        number, wire = tag >> 3, tag & 7
        if wire == VARINT:
            _, end = read_varint(data, pos)
        elif wire == LENGTH:
            size, pos = read_varint(data, pos)
            end = pos + size
        elif wire in (FIXED64, FIXED32):
            end = pos + (8 if wire == FIXED64 else 4)
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
        parts.append(encode_varint(number << 3 | wire))
        if wire == LENGTH:
            parts.append(encode_varint(len(value)))
        parts.append(value)
    return b"".join(parts)


def only(fields: list[Field], number: int, what: str) -> bytes:
    """The one length-delimited field ``number`` (a sub-message or a string)."""
    found = [value for n, wire, value in fields if n == number and wire == LENGTH]
    if len(found) != 1:
        raise ValueError(f"{what}: expected one field {number}, found {len(found)}")
    return found[0]


def replace(fields: list[Field], number: int, new: bytes) -> list[Field]:
    return [(n, w, new if n == number and w == LENGTH else v) for n, w, v in fields]


def strings(fields: list[Field], number: int) -> list[str]:
    return [v.decode("utf-8", "replace") for n, w, v in fields if n == number and w == LENGTH]


def string(fields: list[Field], number: int) -> str:
    """The last value of a string field, or "" (proto3: last one wins, absent is empty)."""
    found = strings(fields, number)
    return found[-1] if found else ""


def ints(fields: list[Field], number: int) -> list[int]:
    """A repeated int64 field, packed or not; negative values come back negative."""
    out: list[int] = []
    for n, wire, value in fields:
        if n != number:
            continue
        if wire == VARINT:
            out.append(read_varint(value, 0)[0])
        elif wire == LENGTH:
            pos = 0
            while pos < len(value):
                item, pos = read_varint(value, pos)
                out.append(item)
    return [v - (1 << 64) if v >= 1 << 63 else v for v in out]
