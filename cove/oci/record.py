"""Typed records without `dataclasses`: `@record` gives a class the `__init__`,
`__repr__` and `__eq__` that `@dataclass` would (fields in order, defaults,
`field(default_factory=...)`; `@frozen_record` as `frozen=True`), and type checkers
treat it as one.

Why: `dataclasses` imports inspect, dis, tokenize and enum, and generates each class's
code with exec when the module loads — ~15 ms of every `cove run`'s start-up for the
handful of records on its path (the image config, the store's records, the run's
options). Here a class costs a dict of its defaults; `__init__` is one generic
function. Only what these records use is supported: no inheritance of fields, no
ClassVar, no `__post_init__`.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar, dataclass_transform

    T = TypeVar("T")
else:
    def dataclass_transform(**_kw: object) -> object:
        return lambda f: f


class _Factory:
    __slots__ = ("make",)

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = make


def field(*, default_factory: Callable[[], Any]) -> Any:
    """A default made anew for each instance (a list, a dict)."""
    return _Factory(default_factory)


_MISSING = object()


def _make(cls: type[T], frozen: bool) -> type[T]:
    names = list(cls.__dict__.get("__annotations__", {}))  # noqa: RUF063 (inspect: ms)
    defaults: dict[str, Any] = {}
    for n in names:
        if n in cls.__dict__:
            defaults[n] = cls.__dict__[n]
            if isinstance(defaults[n], _Factory):
                delattr(cls, n)  # an instance attribute, not a shared class one
    order = tuple(names)
    setter = object.__setattr__

    def __init__(self: Any, *args: Any, **kw: Any) -> None:
        if len(args) > len(order):
            raise TypeError(f"{cls.__name__}() takes {len(order)} positional arguments "
                            f"but {len(args)} were given")
        for n, v in zip(order, args, strict=False):
            if n in kw:
                raise TypeError(f"{cls.__name__}() got multiple values for {n!r}")
            kw[n] = v
        for n in order:
            if n in kw:
                setter(self, n, kw.pop(n))
                continue
            d = defaults.get(n, _MISSING)
            if d is _MISSING:
                raise TypeError(f"{cls.__name__}() missing required argument: {n!r}")
            setter(self, n, d.make() if isinstance(d, _Factory) else d)
        if kw:
            raise TypeError(f"{cls.__name__}() got an unexpected keyword argument "
                            f"{next(iter(kw))!r}")

    def __repr__(self: Any) -> str:
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in order)
        return f"{cls.__qualname__}({inner})"

    def __eq__(self: Any, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in order)

    cls.__init__ = __init__  # type: ignore[method-assign]
    cls.__repr__ = __repr__  # type: ignore[method-assign]
    cls.__eq__ = __eq__  # type: ignore[method-assign]
    cls.__record_fields__ = order  # type: ignore[attr-defined]
    if frozen:
        def __setattr__(self: Any, name: str, value: Any) -> None:
            raise AttributeError(f"cannot assign to field {name!r} of a frozen "
                                 f"{cls.__name__}")

        def __hash__(self: Any) -> int:
            return hash(tuple(getattr(self, n) for n in order))
        cls.__setattr__ = __setattr__  # type: ignore[method-assign]
        cls.__hash__ = __hash__  # type: ignore[method-assign]
    else:
        cls.__hash__ = None  # type: ignore[assignment]  # as dataclass(eq=True)
    return cls


@dataclass_transform(field_specifiers=(field,))
def record(cls: type[T]) -> type[T]:
    """Class decorator: a record (as `@dataclass`)."""
    return _make(cls, False)


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def frozen_record(cls: type[T]) -> type[T]:
    """Class decorator: a record whose fields can't be assigned, hashable (as
    `@dataclass(frozen=True)`)."""
    return _make(cls, True)
