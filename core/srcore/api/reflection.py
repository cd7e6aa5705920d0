"""Server reflection that serves the contract with its comments, for `grpcurl describe`.

grpc's reflection servicer rebuilds file descriptors from the generated modules, which carry
no source info, so every comment of the contract would be lost. This one answers from the
descriptor set that scripts/gen_proto.py writes with source info, and falls back to the
generated descriptors for files outside the contract (health, reflection).
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import resources
from typing import Any

from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha._async import ReflectionServicer


def documented_files() -> dict[str, bytes]:
    """Serialized FileDescriptorProtos (with comments) of the contract, by file name."""
    raw = resources.files("serviceradar").joinpath("contract.binpb").read_bytes()
    descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(raw)
    return {file.name: file.SerializeToString() for file in descriptor_set.file}


def _closure(descriptor: Any, seen: dict[str, Any]) -> None:
    seen[descriptor.name] = descriptor
    for dependency in descriptor.dependencies:
        if dependency.name not in seen:
            _closure(dependency, seen)


class DocumentedReflection(ReflectionServicer):  # type: ignore[misc]
    """grpc.reflection.v1alpha answering with documented descriptors where it has them."""

    def __init__(self, service_names: Iterable[str]) -> None:
        super().__init__(service_names)
        self._documented = documented_files()

    def _response(self, descriptor: Any, request: Any) -> reflection_pb2.ServerReflectionResponse:
        files: dict[str, Any] = {}
        _closure(descriptor, files)
        serialized = []
        for name, file in files.items():
            documented = self._documented.get(name)
            if documented is None:
                proto = descriptor_pb2.FileDescriptorProto()
                file.CopyToProto(proto)
                documented = proto.SerializeToString()
            serialized.append(documented)
        return reflection_pb2.ServerReflectionResponse(
            file_descriptor_response=reflection_pb2.FileDescriptorResponse(file_descriptor_proto=serialized),
            original_request=request,
        )

    def _file_by_filename(self, request: Any, filename: str) -> reflection_pb2.ServerReflectionResponse:
        try:
            descriptor = self._pool.FindFileByName(filename)
        except KeyError:
            return super()._file_by_filename(request, filename)
        return self._response(descriptor, request)

    def _file_containing_symbol(self, request: Any, symbol: str) -> reflection_pb2.ServerReflectionResponse:
        try:
            descriptor = self._pool.FindFileContainingSymbol(symbol)
        except KeyError:
            return super()._file_containing_symbol(request, symbol)
        return self._response(descriptor, request)
