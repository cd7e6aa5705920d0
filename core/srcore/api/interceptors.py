"""One server interceptor for every RPC: metrics, and domain errors as gRPC statuses."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import grpc
import sqlalchemy.exc
from grpc.aio import AbortError
from prometheus_client import Counter, Histogram

from srcore.api.context import Context
from srcore.api.errors import abort_with
from srcore.domain.errors import DomainError
from srcore.observability.metrics import RPC_LATENCY, RPC_REQUESTS

log = logging.getLogger(__name__)


def _method_metrics(method: str) -> tuple[Histogram, Callable[[str], Counter]]:
    """One method's latency histogram and its request counter by status code.

    Resolved once per method (and code), not per call: a labelled child's lookup takes a lock
    and builds its key, which a heartbeat-heavy fleet would pay on every call.
    """
    by_code: dict[str, Counter] = {}

    def requests(code: str) -> Counter:
        child = by_code.get(code)
        if child is None:
            child = by_code[code] = RPC_REQUESTS.labels(method, code)
        return child

    return RPC_LATENCY.labels(method), requests


def _code_name(context: Context) -> str:
    code = context.code()
    if code is None:
        return "OK"
    if isinstance(code, grpc.StatusCode):
        return code.name
    return grpc.StatusCode(code).name if not isinstance(code, int) else _by_value(code)


def _by_value(value: int) -> str:
    for code in grpc.StatusCode:
        if code.value[0] == value:
            return code.name
    return "UNKNOWN"


async def _internal(context: Context, method: str, exc: BaseException) -> None:
    # Never a stack trace to the client: log it under an id the operator can grep for.
    incident = uuid.uuid4().hex[:12]
    log.error("unhandled error in %s (incident %s)", method, incident, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error (incident {incident})")


# A database that is down or restarting: the call can be retried, so UNAVAILABLE, not INTERNAL.
STORE_DOWN = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, ConnectionError)


async def _store_down(context: Context, method: str, exc: BaseException) -> None:
    log.warning("store unavailable during %s: %s", method, exc)
    await context.abort(grpc.StatusCode.UNAVAILABLE, "the store is unavailable: retry with backoff")


class ServerInterceptor(grpc.aio.ServerInterceptor):
    """Counts and times every RPC by status code and maps DomainError to its status.

    It is the outermost interceptor: the handler it builds for a method (wrapping the inner
    interceptors' wrappers) depends on the method alone, so it is built once per method and
    reused, instead of on every call of a heartbeat-heavy fleet. So every interceptor inside it
    must decide per call inside its wrapper, never in intercept_service from the call's metadata.
    """

    def __init__(self) -> None:
        self._handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        """The wrapped handler of this call's method."""
        method = handler_call_details.method
        cached = self._handlers.get(method)
        if cached is not None:
            return cached
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        wrapped = self._wrap(method, handler)
        self._handlers[method] = wrapped
        return wrapped

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._streaming(method, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._unary(method, handler.stream_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return grpc.stream_stream_rpc_method_handler(
            self._streaming(method, cast(Callable[..., Any], handler.stream_stream)),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    @staticmethod
    def _unary(method: str, behavior: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
        latency, requests = _method_metrics(method)

        async def wrapper(request: Any, context: Context) -> Any:
            started = time.perf_counter()
            try:
                return await behavior(request, context)
            except DomainError as exc:
                await abort_with(context, exc)
            except (AbortError, grpc.aio.UsageError):
                raise
            except STORE_DOWN as exc:
                await _store_down(context, method, exc)
            except Exception as exc:
                await _internal(context, method, exc)
            finally:
                latency.observe(time.perf_counter() - started)
                requests(_code_name(context)).inc()

        return wrapper

    @staticmethod
    def _streaming(method: str, behavior: Callable[..., Any]) -> Callable[..., AsyncIterator[Any]]:
        latency, requests = _method_metrics(method)

        async def wrapper(request: Any, context: Context) -> AsyncIterator[Any]:
            started = time.perf_counter()
            try:
                async for response in behavior(request, context):
                    yield response
            except DomainError as exc:
                await abort_with(context, exc)
            except (AbortError, grpc.aio.UsageError):
                raise
            except STORE_DOWN as exc:
                await _store_down(context, method, exc)
            except Exception as exc:
                await _internal(context, method, exc)
            finally:
                latency.observe(time.perf_counter() - started)
                requests(_code_name(context)).inc()

        return wrapper
