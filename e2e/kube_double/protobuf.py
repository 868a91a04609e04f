"""Decoding of the protobuf request bodies client-go's typed clients send (Helm's release Secrets, kubectl's
`create namespace`): the `k8s\\0` envelope (runtime.Unknown) around the few kinds such clients write here.
Field numbers are those of k8s.io/api's generated.proto; responses stay JSON, which those clients also accept.

Kinds beyond this table are refused with 415 and a message naming them."""

from __future__ import annotations

import base64

MAGIC = b"k8s\x00"

# message → field number → (json name, type); a type is a scalar, a message name, "map", "bytesmap", or "[]x".
SCHEMAS: dict[str, dict[int, tuple[str, str]]] = {
    "Unknown": {1: ("typeMeta", "TypeMeta"), 2: ("raw", "bytes"), 3: ("contentEncoding", "str"),
                4: ("contentType", "str")},
    "TypeMeta": {1: ("apiVersion", "str"), 2: ("kind", "str")},
    "ObjectMeta": {1: ("name", "str"), 2: ("generateName", "str"), 3: ("namespace", "str"), 5: ("uid", "str"),
                   6: ("resourceVersion", "str"), 7: ("generation", "int"), 11: ("labels", "map"),
                   12: ("annotations", "map"), 13: ("ownerReferences", "[]OwnerReference"),
                   14: ("finalizers", "[]str")},
    "OwnerReference": {1: ("kind", "str"), 3: ("name", "str"), 4: ("uid", "str"), 5: ("apiVersion", "str"),
                       6: ("controller", "bool"), 7: ("blockOwnerDeletion", "bool")},
    "Secret": {1: ("metadata", "ObjectMeta"), 2: ("data", "bytesmap"), 3: ("type", "str"),
               4: ("stringData", "map"), 5: ("immutable", "bool")},
    "ConfigMap": {1: ("metadata", "ObjectMeta"), 2: ("data", "map"), 3: ("binaryData", "bytesmap"),
                  4: ("immutable", "bool")},
    "Namespace": {1: ("metadata", "ObjectMeta"), 2: ("spec", "NamespaceSpec")},
    "NamespaceSpec": {1: ("finalizers", "[]str")},
    "DeleteOptions": {1: ("gracePeriodSeconds", "int"), 2: ("preconditions", "Preconditions"),
                      3: ("orphanDependents", "bool"), 4: ("propagationPolicy", "str"), 5: ("dryRun", "[]str")},
    "Preconditions": {1: ("uid", "str"), 2: ("resourceVersion", "str")},
}


class ProtobufError(ValueError):
    pass


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        if i >= len(buf):
            raise ProtobufError("truncated varint")
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7


def _fields(buf: bytes):
    i = 0
    while i < len(buf):
        tag, i = _varint(buf, i)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            n, i = _varint(buf, i)
            value, i = buf[i:i + n], i + n
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
        yield number, value


def decode(message: str, buf: bytes) -> dict:
    schema = SCHEMAS[message]
    out: dict = {}
    for number, raw in _fields(buf):
        if number not in schema:
            continue
        name, typ = schema[number]
        if typ in ("map", "bytesmap"):
            entry = dict(_fields(raw))
            key, value = entry.get(1, b"").decode(), entry.get(2, b"")
            out.setdefault(name, {})[key] = (base64.b64encode(value).decode() if typ == "bytesmap"
                                             else value.decode())
            continue
        many = typ.startswith("[]")
        base = typ[2:] if many else typ
        if base == "str":
            value = raw.decode()
        elif base == "bytes":
            value = raw
        elif base == "int":
            value = raw - (1 << 64) if raw >= 1 << 63 else raw
        elif base == "bool":
            value = bool(raw)
        else:
            value = decode(base, raw)
        if many:
            out.setdefault(name, []).append(value)
        else:
            out[name] = value
    return out


def decode_envelope(body: bytes, expect: str | None = None) -> dict:
    """A JSON-shaped object from a `k8s\\0`-prefixed protobuf body."""
    if not body.startswith(MAGIC):
        raise ProtobufError("missing the k8s protobuf envelope")
    unknown = decode("Unknown", body[len(MAGIC):])
    kind = unknown.get("typeMeta", {}).get("kind") or expect
    if kind not in SCHEMAS:
        raise ProtobufError(f"protobuf bodies of kind {kind!r} are not decoded by this double; send JSON")
    obj = decode(kind, unknown.get("raw", b""))
    if kind != "DeleteOptions":
        obj = {"apiVersion": unknown.get("typeMeta", {}).get("apiVersion", "v1"), "kind": kind, **obj}
    return obj
