#!/usr/bin/python3
"""An independent key provider client: Debian's python3-grpcio, generic unary calls with protobuf
bytes encoded and decoded here by hand (no generated code, none of the sidecar's code).

Reads a JSON list of calls on stdin: [{"path": "/keyprovider.KeyProviderService/SayHello",
"field1": "<base64 bytes of field 1>"} or {"path": ..., "raw": "<base64 of the whole message>"}]. Writes a JSON list of results: {"ok": true, "fields":
{"1": "<base64>", ...}} or {"ok": false, "code": "INVALID_ARGUMENT", "details": "..."}.
Usage: keyprovider_client.py HOST:PORT
"""
import base64
import json
import sys

import grpc


def varint(n):
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def encode_field1(value):
    """A message with one length-delimited field 1 (bytes or string: the same on the wire)."""
    if not value:
        return b""
    return b"\x0a" + varint(len(value)) + value


def read_varint(buf, pos):
    shift = 0
    n = 0
    while True:
        b = buf[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return n, pos
        shift += 7


def decode_fields(buf):
    """Every length-delimited field of a message (the answers have no other kind)."""
    fields = {}
    pos = 0
    while pos < len(buf):
        key, pos = read_varint(buf, pos)
        if key & 7 != 2:
            raise ValueError("unexpected wire type %d" % (key & 7))
        size, pos = read_varint(buf, pos)
        fields[str(key >> 3)] = base64.b64encode(buf[pos:pos + size]).decode()
        pos += size
    return fields


def main():
    target = sys.argv[1]
    calls = json.load(sys.stdin)
    results = []
    with grpc.insecure_channel(target) as channel:
        for c in calls:
            method = channel.unary_unary(c["path"], request_serializer=None, response_deserializer=None)
            try:
                request = base64.b64decode(c["raw"]) if "raw" in c else encode_field1(base64.b64decode(c["field1"]))
                answer = method(request, timeout=60)
                results.append({"ok": True, "fields": decode_fields(answer)})
            except grpc.RpcError as e:
                results.append({"ok": False, "code": e.code().name, "details": e.details()})
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
