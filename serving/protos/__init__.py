"""Thin protobuf messages of TF Serving's PredictionService (Predict, GetModelMetadata): no TensorFlow, no protoc.

The messages are this project's own minimal restatement of TensorFlow 2.16 / TF Serving 2.16's messages of the
same full names (`tensorflow.TensorProto`, `tensorflow.serving.PredictRequest`, ...), written in the two
`.proto` files of this folder (`tensorflow_subset.proto`, `tensorflow_serving_subset.proto`): same packages,
field numbers, types and labels, so they are wire-compatible with `tensorflow_model_server` and `lems serve`,
and only the fields the client sets or reads.

At import, a small reader for the proto3 subset those files use (messages, nested messages, enums, `map<,>`,
`oneof`, `repeated`, `import`, one `service`) turns them into `FileDescriptorProto`s, adds them to a *private*
`DescriptorPool` (next to protobuf's own `any.proto` and `wrappers.proto`) and makes the message classes with
protobuf's `message_factory`. Private, because TensorFlow registers its own descriptors of the same names in
protobuf's default pool; a process that loads both (the server side, the tests) would otherwise get a
duplicate-symbol error. The classes behave like generated ones (`FromString`, `SerializeToString`, maps,
`CopyFrom` between thin messages); a TensorFlow `TensorProto` converts by its bytes
(`thin.ParseFromString(tf_proto.SerializeToString())`).

    from serving import protos
    request = protos.PredictRequest()
    request.model_spec.name = "lem"
    protos.PREDICT_METHOD   # "/tensorflow.serving.PredictionService/Predict"
"""
from __future__ import annotations

import os
import re

from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2
from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper

HERE = os.path.dirname(os.path.abspath(__file__))
#: The `.proto` files of this folder, in dependency order (each is also its name in the private pool).
PROTO_FILES = ("tensorflow_subset.proto", "tensorflow_serving_subset.proto")
#: protobuf's own files the thin ones import, added to the private pool from the installed protobuf.
_WELL_KNOWN = {"google/protobuf/any.proto": any_pb2, "google/protobuf/wrappers.proto": wrappers_pb2}

_F = descriptor_pb2.FieldDescriptorProto
_SCALARS = {name: getattr(_F, "TYPE_" + name.upper()) for name in (
    "double", "float", "int64", "uint64", "int32", "fixed64", "fixed32", "bool", "string", "bytes", "uint32",
    "sfixed32", "sfixed64", "sint32", "sint64")}
_MAP_KEYS = ("int64", "uint64", "int32", "fixed64", "fixed32", "bool", "string", "uint32", "sfixed32",
             "sfixed64", "sint32", "sint64")
_TOKEN = re.compile(r'\s+|//[^\n]*|/\*.*?\*/|(?P<tok>"[^"\n]*"|\.?[A-Za-z_][\w.]*|-?\d+|[{}()<>=;,\[\]])', re.S)


class ProtoSyntaxError(ValueError):
    """A `.proto` file outside the subset `serving.protos` reads (file:line: what was expected)."""


class _Reader:
    """Recursive-descent reader of the proto3 subset -> FileDescriptorProto (type names still unresolved)."""

    def __init__(self, text: str, name: str):
        self.name, self.toks, pos = name, [], 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None:
                raise ProtoSyntaxError(f"{name}:{text.count(chr(10), 0, pos) + 1}: unexpected {text[pos:pos + 20]!r}")
            if m.group("tok"):
                self.toks.append((m.group("tok"), text.count("\n", 0, pos) + 1))
            pos = m.end()
        self.i = 0

    def _fail(self, what: str):
        tok, line = self.toks[self.i] if self.i < len(self.toks) else ("end of file", self.toks[-1][1])
        raise ProtoSyntaxError(f"{self.name}:{line}: expected {what}, got {tok!r}")

    def peek(self):
        return self.toks[self.i][0] if self.i < len(self.toks) else None

    def take(self, expected=None, what=None):
        tok = self.peek()
        if tok is None or (expected is not None and tok != expected):
            self._fail(what or repr(expected))
        self.i += 1
        return tok

    def ident(self, what="a name"):
        tok = self.peek()
        if tok is None or not re.fullmatch(r"\.?[A-Za-z_][\w.]*", tok):
            self._fail(what)
        self.i += 1
        return tok

    def string(self):
        tok = self.peek()
        if tok is None or not tok.startswith('"'):
            self._fail("a quoted string")
        self.i += 1
        return tok[1:-1]

    def number(self):
        tok = self.peek()
        if tok is None or not re.fullmatch(r"-?\d+", tok):
            self._fail("a number")
        self.i += 1
        return int(tok)

    def read_file(self) -> descriptor_pb2.FileDescriptorProto:
        fdp = descriptor_pb2.FileDescriptorProto(name=self.name)
        while self.peek() is not None:
            word = self.take(what="syntax, package, import, message, enum or service")
            if word == "syntax":
                self.take("=")
                fdp.syntax = self.string()
                if fdp.syntax != "proto3":
                    raise ProtoSyntaxError(f"{self.name}: only proto3 files are read, got {fdp.syntax!r}")
                self.take(";")
            elif word == "package":
                fdp.package = self.ident("a package name")
                self.take(";")
            elif word == "import":
                fdp.dependency.append(self.string())
                self.take(";")
            elif word == "message":
                self.message(fdp.message_type.add())
            elif word == "enum":
                self.enum(fdp.enum_type.add())
            elif word == "service":
                self.service(fdp.service.add())
            else:
                self.i -= 1
                self._fail("syntax, package, import, message, enum or service")
        if fdp.syntax != "proto3":
            raise ProtoSyntaxError(f'{self.name}: missing syntax = "proto3";')
        return fdp

    def message(self, msg):
        msg.name = self.ident("a message name")
        self.take("{")
        while self.peek() != "}":
            word = self.peek()
            if word == "message":
                self.take()
                self.message(msg.nested_type.add())
            elif word == "enum":
                self.take()
                self.enum(msg.enum_type.add())
            elif word == "oneof":
                self.take()
                index = len(msg.oneof_decl)
                msg.oneof_decl.add(name=self.ident("a oneof name"))
                self.take("{")
                while self.peek() != "}":
                    self.field(msg, repeated=False).oneof_index = index
                self.take("}")
            elif word == "map":
                self.map_field(msg)
            elif word == "repeated":
                self.take()
                self.field(msg, repeated=True)
            else:
                self.field(msg, repeated=False)
        self.take("}")

    def field(self, msg, repeated: bool):
        type_name = self.ident("a field type")
        field = msg.field.add(name=self.ident("a field name"),
                              label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
        self.take("=")
        field.number = self.number()
        self.take(";", "';' (field options are not part of the subset)")
        if type_name in _SCALARS:
            field.type = _SCALARS[type_name]
        else:
            field.type_name = type_name          # resolved later (message or enum)
        return field

    def map_field(self, msg):
        self.take("map")
        self.take("<")
        key = self.ident("a map key type")
        if key not in _MAP_KEYS:
            self._fail(f"a map key type (one of {', '.join(_MAP_KEYS)})")
        self.take(",")
        value = self.ident("a map value type")
        self.take(">")
        name = self.ident("a field name")
        self.take("=")
        number = self.number()
        self.take(";")
        # what protoc generates for map<K, V> name: a nested `NameEntry { K key = 1; V value = 2; }` message
        # with options.map_entry, and a repeated field of it
        entry = msg.nested_type.add(name="".join(part[:1].upper() + part[1:] for part in name.split("_")) + "Entry")
        entry.options.map_entry = True
        entry.field.add(name="key", number=1, label=_F.LABEL_OPTIONAL, type=_SCALARS[key])
        val = entry.field.add(name="value", number=2, label=_F.LABEL_OPTIONAL)
        if value in _SCALARS:
            val.type = _SCALARS[value]
        else:
            val.type_name = value
        msg.field.add(name=name, number=number, label=_F.LABEL_REPEATED, type=_F.TYPE_MESSAGE,
                      type_name=entry.name)

    def enum(self, enum):
        enum.name = self.ident("an enum name")
        self.take("{")
        while self.peek() != "}":
            value = enum.value.add(name=self.ident("an enum value name"))
            self.take("=")
            value.number = self.number()
            self.take(";")
        self.take("}")

    def service(self, service):
        service.name = self.ident("a service name")
        self.take("{")
        while self.peek() != "}":
            self.take("rpc")
            method = service.method.add(name=self.ident("a method name"))
            self.take("(")
            method.input_type = self.ident("a request message")
            self.take(")")
            self.take("returns")
            self.take("(")
            method.output_type = self.ident("a response message")
            self.take(")")
            self.take(";")
        self.take("}")


def _symbols(fdp, kinds: dict):
    """Full names ('.pkg.Msg.Nested') of the messages and enums of `fdp` -> 'message' / 'enum'."""
    def walk(scope, messages, enums):
        for enum in enums:
            kinds[f"{scope}.{enum.name}"] = "enum"
        for msg in messages:
            kinds[f"{scope}.{msg.name}"] = "message"
            walk(f"{scope}.{msg.name}", msg.nested_type, msg.enum_type)
    walk("." + fdp.package if fdp.package else "", fdp.message_type, fdp.enum_type)


def _resolve(ref: str, scope: str, kinds: dict, where: str) -> str:
    """Full name of type `ref` used in `scope` ('.pkg.Msg'): innermost scope first, as protoc looks names up."""
    if ref.startswith("."):
        candidates = [ref]
    else:
        parts = scope.split(".")
        candidates = [".".join(parts[:i] + [ref]) for i in range(len(parts), 0, -1)]
    for full in candidates:
        if full in kinds:
            return full
    raise ProtoSyntaxError(f"{where}: unknown type {ref!r}")


def _link(fdp, kinds: dict):
    """Resolve every message / enum type name of `fdp` to its full name (and set the field types)."""
    def walk(scope, messages):
        for msg in messages:
            inner = f"{scope}.{msg.name}"
            for field in msg.field:
                if field.type_name:
                    full = _resolve(field.type_name, inner, kinds, f"{fdp.name}: {inner[1:]}.{field.name}")
                    field.type_name = full
                    field.type = _F.TYPE_MESSAGE if kinds[full] == "message" else _F.TYPE_ENUM
            walk(inner, msg.nested_type)
    scope = "." + fdp.package if fdp.package else ""
    walk(scope, fdp.message_type)
    for service in fdp.service:
        for method in service.method:
            where = f"{fdp.name}: {service.name}.{method.name}"
            method.input_type = _resolve(method.input_type, scope, kinds, where)
            method.output_type = _resolve(method.output_type, scope, kinds, where)
            if kinds[method.input_type] != "message" or kinds[method.output_type] != "message":
                raise ProtoSyntaxError(f"{where}: request and response must be messages")


def read_proto(text: str, name: str, kinds: dict) -> descriptor_pb2.FileDescriptorProto:
    """FileDescriptorProto of one `.proto` text of the subset; `kinds`: full names already known (its
    imports'), updated with this file's."""
    fdp = _Reader(text, name).read_file()
    _symbols(fdp, kinds)
    _link(fdp, kinds)
    return fdp


def file_descriptor_protos() -> list:
    """FileDescriptorProtos of the thin files (in `PROTO_FILES` order), as added to the private pool."""
    kinds: dict = {}
    for module in _WELL_KNOWN.values():
        _symbols(descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb), kinds)
    out = []
    for name in PROTO_FILES:
        with open(os.path.join(HERE, name), encoding="utf-8") as f:
            out.append(read_proto(f.read(), name, kinds))
    return out


def _build_pool():
    pool = descriptor_pool.DescriptorPool()
    for module in _WELL_KNOWN.values():
        pool.AddSerializedFile(module.DESCRIPTOR.serialized_pb)
    fdps = file_descriptor_protos()
    for fdp in fdps:
        pool.AddSerializedFile(fdp.SerializeToString())
    return pool, fdps


#: The private pool holding the thin files (and protobuf's any.proto / wrappers.proto they import).
POOL, _FDPS = _build_pool()

if hasattr(message_factory, "GetMessageClass"):       # protobuf >= 4.22
    def _message_class_in(pool, full_name: str):
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(full_name))
else:                                                  # protobuf 3.20 - 4.21: one factory per pool, one class per type
    _FACTORIES: dict = {}

    def _message_class_in(pool, full_name: str):
        factory = _FACTORIES.setdefault(id(pool), message_factory.MessageFactory(pool))
        return factory.GetPrototype(pool.FindMessageTypeByName(full_name))


def _message_class(full_name: str):
    """The message class of `full_name` in this module's private pool."""
    return _message_class_in(POOL, full_name)


TensorShapeProto = _message_class("tensorflow.TensorShapeProto")
TensorProto = _message_class("tensorflow.TensorProto")
TensorInfo = _message_class("tensorflow.TensorInfo")
SignatureDef = _message_class("tensorflow.SignatureDef")
ModelSpec = _message_class("tensorflow.serving.ModelSpec")
PredictRequest = _message_class("tensorflow.serving.PredictRequest")
PredictResponse = _message_class("tensorflow.serving.PredictResponse")
SignatureDefMap = _message_class("tensorflow.serving.SignatureDefMap")
GetModelMetadataRequest = _message_class("tensorflow.serving.GetModelMetadataRequest")
GetModelMetadataResponse = _message_class("tensorflow.serving.GetModelMetadataResponse")

#: `tensorflow.DataType`: `DataType.Name(1) == "DT_FLOAT"`, `DataType.Value("DT_FLOAT") == 1`; the values are
#: also module constants (`DT_FLOAT`, ...).
DataType = EnumTypeWrapper(POOL.FindEnumTypeByName("tensorflow.DataType"))
globals().update({v.name: v.number for v in DataType.DESCRIPTOR.values})

#: The service and the gRPC method paths the client calls (`/<package>.<service>/<method>`).
_SERVICE = POOL.FindServiceByName("tensorflow.serving.PredictionService")
PREDICT_METHOD = f"/{_SERVICE.full_name}/Predict"
GET_MODEL_METADATA_METHOD = f"/{_SERVICE.full_name}/GetModelMetadata"
assert {m.name for m in _SERVICE.methods} == {"Predict", "GetModelMetadata"}

#: `Any.type_url` of the SignatureDefMap in GetModelMetadataResponse.metadata["signature_def"].
SIGNATURE_DEF_MAP_TYPE_URL = "type.googleapis.com/" + SignatureDefMap.DESCRIPTOR.full_name


def unpack_signature_def_map(response):
    """The SignatureDefMap packed in a GetModelMetadataResponse's metadata["signature_def"] (thin or
    TensorFlow's message alike); ValueError when there is none or it is another type."""
    if "signature_def" not in response.metadata:
        raise ValueError(f"model metadata has no 'signature_def' entry (has {sorted(response.metadata)})")
    packed = response.metadata["signature_def"]
    if packed.type_url.rsplit("/", 1)[-1] != SignatureDefMap.DESCRIPTOR.full_name:
        raise ValueError(f"model metadata 'signature_def' holds {packed.type_url!r}, not a SignatureDefMap")
    return SignatureDefMap.FromString(packed.value)
