"""Interop of Pulsaga's Avro messages with Python's fastavro, from the .avsc files alone.

Usage: interop.py AVRO_DIR WORK_DIR

1. Reads every WORK_DIR/rust/<topic>/<name>.avro the Rust test wrote, decodes it with
   fastavro.schemaless_reader and nothing but AVRO_DIR/<topic>.avsc, and checks the result equals
   <name>.json (the message as serde_json renders it).
2. Writes WORK_DIR/python/<topic>/<name>.avro with fastavro.schemaless_writer: the same message
   with every value changed, and <name>.json, what Rust must decode it to.

Run by the Rust integration test (schemas/tests/it/interop.rs) with PULSAGA_PYTHON.
"""

import datetime
import io
import json
import pathlib
import sys
import uuid

try:
    import fastavro
except ImportError:
    sys.exit("interop.py: the Python package fastavro is missing; run scripts/setup.sh")

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
MICROSECOND = datetime.timedelta(microseconds=1)
PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
NAMESPACE = "io.pulsaga"  # of every Pulsaga schema


def short(name):
    return name.rsplit(".", 1)[-1]


def named_types(schema, names):
    """Collects every named type of a schema by its short name."""
    if isinstance(schema, list):
        for branch in schema:
            named_types(branch, names)
    elif isinstance(schema, dict):
        if schema["type"] in ("record", "enum", "fixed"):
            names[schema["name"]] = schema
        for field in schema.get("fields", []):
            named_types(field["type"], names)
        if schema["type"] == "array":
            named_types(schema["items"], names)
    return names


def to_json(value):
    """Turns what fastavro read into serde_json's rendering of the Rust message."""
    if isinstance(value, tuple):  # (record name, record): one branch of a union of records
        name, record = value
        return {short(name): to_json(record)}
    if isinstance(value, dict):
        return {key: to_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [to_json(item) for item in value]
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime.datetime):
        return (value - EPOCH) // MICROSECOND
    return value


def changed(schema, value, names):
    """Changes every value of a message; returns it as fastavro writes it and as serde_json."""
    if isinstance(schema, list):
        return changed_union(schema, value, names)
    schema = resolve(schema, names)
    kind, logical = schema["type"], schema.get("logicalType")
    if logical == "uuid":
        new = uuid.uuid5(uuid.NAMESPACE_URL, value)
        return new, str(new)
    if logical == "timestamp-micros":
        micros = value + 86_400_000_001
        return EPOCH + micros * MICROSECOND, micros
    if kind == "string":
        return value + " · pý", value + " · pý"
    if kind == "int":
        return value + 1, value + 1
    if kind == "long":
        return -2 * value - 1, -2 * value - 1
    if kind == "enum":
        symbols = schema["symbols"]
        symbol = symbols[(symbols.index(value) + 1) % len(symbols)]
        return symbol, symbol
    if kind == "array":
        items = [changed(schema["items"], item, names) for item in value]
        items += items[-1:]
        return [native for native, _ in items], [js for _, js in items]
    if kind == "record":
        fields = {f["name"]: changed(f["type"], value[f["name"]], names) for f in schema["fields"]}
        return {k: native for k, (native, _) in fields.items()}, {k: js for k, (_, js) in fields.items()}
    raise ValueError(f"interop.py cannot change a value of type {schema!r}")


def changed_union(branches, value, names):
    if value is None:
        return None, None
    records = [b for b in branches if resolve(b, names).get("type") == "record"]
    if len(records) > 1:  # serde names the branch: {"RecordName": {...}}
        (name, inner), = value.items()
        branch = next(b for b in records if resolve(b, names)["name"] == name)
        native, js = changed(branch, inner, names)
        return (f"{NAMESPACE}.{name}", native), {name: js}
    (branch,) = [b for b in branches if b != "null"]
    return changed(branch, value, names)


def resolve(schema, names):
    if isinstance(schema, str):
        return {"type": schema} if schema in PRIMITIVES else names[short(schema)]
    return schema


def main(avro_dir, work_dir):
    read = written = 0
    for avro in sorted((work_dir / "rust").glob("*/*.avro")):
        topic = avro.parent.name
        schema_json = json.loads((avro_dir / f"{topic}.avsc").read_text(encoding="utf-8"))
        schema = fastavro.parse_schema(schema_json)
        expected = json.loads(avro.with_suffix(".json").read_text(encoding="utf-8"))
        data = avro.read_bytes()
        stream = io.BytesIO(data)
        decoded = fastavro.schemaless_reader(
            stream, schema, return_record_name=True, return_record_name_override=True
        )
        if stream.tell() != len(data):
            sys.exit(f"{avro}: {len(data) - stream.tell()} bytes left after the message")
        if to_json(decoded) != expected:
            sys.exit(f"{avro}: fastavro read\n{to_json(decoded)}\nbut Rust wrote\n{expected}")
        read += 1

        native, js = changed(schema_json, expected, named_types(schema_json, {}))
        out = work_dir / "python" / topic / avro.name
        out.parent.mkdir(parents=True, exist_ok=True)
        stream = io.BytesIO()
        fastavro.schemaless_writer(stream, schema, native, strict=True)
        out.write_bytes(stream.getvalue())
        out.with_suffix(".json").write_text(json.dumps(js, ensure_ascii=False), encoding="utf-8")
        written += 1
    print(f"interop.py: read {read} Rust messages, wrote {written}")


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]))
