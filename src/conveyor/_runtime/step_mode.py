"""Inside a step process: the decorators become pass-throughs.

The executor sets IN_STEP before importing a step's module. The module's `@component` and
`@pipeline` then only keep the plain function: the spec was validated and the DAG traced in the
orchestrator, and doing it again would cost every step the import of `typing`, `inspect`,
`packaging` and every hinted type, none of which a step environment needs.
"""

from __future__ import annotations

from contextvars import ContextVar

TYPE_CHECKING = False  # not `from typing import ...`: step processes should not pay for typing

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractContextManager
    from typing import Any, NoReturn

IN_STEP: ContextVar[bool] = ContextVar("conveyor_in_step", default=False)


class StepFunction:
    """What `@component` gives inside a step: the function, callable as itself."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.__wrapped__ = fn
        self.__name__ = getattr(fn, "__name__", "step")
        self.__qualname__ = getattr(fn, "__qualname__", self.__name__)
        self.__doc__ = getattr(fn, "__doc__", None)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def with_options(self, **options: Any) -> StepFunction:
        return self


def _decorator(wrap: Callable[[Callable[..., Any]], Any]) -> Callable[..., Any]:
    def decorator(fn: Any = None, **options: Any) -> Any:
        if fn is not None and callable(fn) and not options:
            return wrap(fn)
        return wrap

    return decorator


component = _decorator(StepFunction)
host_step = _decorator(StepFunction)
pipeline = _decorator(lambda fn: fn)


class _HostStepStub:
    """`load_table` and friends inside a step: never called there (pipelines are not traced)."""

    def __init__(self, name: str) -> None:
        self.__name__ = name

    def __call__(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise RuntimeError(f"{self.__name__}() is a host step and cannot run inside a step")


def after(*placeholders: Any) -> AbstractContextManager[None]:
    """Inside a step, pipelines are not traced: ordering blocks do nothing."""
    import contextlib

    return contextlib.nullcontext()


STEP_MODE_EXPORTS: dict[str, object] = {
    "after": after,
    "component": component,
    "host_step": host_step,
    "pipeline": pipeline,
    "load_table": _HostStepStub("load_table"),
    "write_table": _HostStepStub("write_table"),
    "register_model": _HostStepStub("register_model"),
    "load_model": _HostStepStub("load_model"),
}


def unavailable(name: str) -> type:
    """A stand-in for a public name a step cannot use, such as a host step's `HostContext` hint.

    Component modules are imported inside steps, so names they only use in annotations or in
    pipeline bodies must resolve there; using one fails with a message, never an ImportError.
    """

    def refuse(*args: Any, **kwargs: Any) -> NoReturn:
        raise RuntimeError(
            f"conveyor.{name} is not available inside a step: a step has only conveyor's "
            f"stdlib-only core; use it in the pipeline or a host step instead"
        )

    return type(name, (), {"__init__": refuse, "__call__": refuse, "__module__": "conveyor"})


def step_export(name: str, module: str) -> Any:
    """What `from conveyor import NAME` gives inside a step (the public module was `module`)."""
    import importlib

    if name in STEP_MODE_EXPORTS:
        return STEP_MODE_EXPORTS[name]
    if name == "Metrics":
        module = "conveyor._runtime.codecs"
    if module == "conveyor.errors" or module.startswith("conveyor._runtime"):
        return getattr(importlib.import_module(module), name)
    return unavailable(name)
