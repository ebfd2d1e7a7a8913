"""Records and the rules that validate them, without importing pydantic.

The desired state (:mod:`reconciler.spec`) and the host config
(:mod:`reconciler.hostconfig`) are frozen dataclasses deriving from :class:`Record`.
Their fields carry rules as ``Annotated`` metadata: :class:`Check` and :class:`Prepare`
(both a :class:`Rule`), :class:`Limits` and :class:`Lax`. Each rule implements pydantic's
``__get_pydantic_core_schema__`` hook and imports pydantic inside it, so pydantic is
loaded only when a YAML document is validated (:mod:`reconciler.documents`), never
when records come from the cache (:mod:`reconciler.recordcache`) or are built in code.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, cast

if TYPE_CHECKING:
    from pydantic import GetCoreSchemaHandler
    from pydantic_core import CoreSchema


class Record:
    """Base of every validated record; documents are mappings, so records are built
    from mappings even where their fields are strict.

    ``__pydantic_config__`` is pydantic's config for a dataclass: unknown keys are
    errors (and, in :class:`StrictRecord`, no value is coerced from another type).
    """

    __pydantic_config__: ClassVar[dict[str, Any]] = {"extra": "forbid"}

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[Any], handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        schema = handler(source)
        if schema["type"] == "dataclass":
            # a mapping builds the record; its fields stay as strict as the config says
            cast("dict[str, Any]", schema)["strict"] = False
        return schema


class StrictRecord(Record):
    """A record of the desired state: ``'yes'`` is not a boolean, ``1`` is not a string."""

    __pydantic_config__: ClassVar[dict[str, Any]] = {"extra": "forbid", "strict": True}


@dataclass(frozen=True)
class Rule:
    """A function pydantic runs on a field's value, after its type check (:class:`Check`)
    or before it (:class:`Prepare`)."""

    func: Callable[[Any], Any]
    _BEFORE: ClassVar[bool] = False

    def __get_pydantic_core_schema__(
        self, source: type[Any], handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        from pydantic_core import core_schema

        wrap = (
            core_schema.no_info_before_validator_function
            if self._BEFORE
            else core_schema.no_info_after_validator_function
        )
        return wrap(self.func, handler(source))


class Check(Rule):
    """Run ``func`` on the value once its type is right; it returns the value or raises
    ``ValueError`` with a message for the user."""


class Prepare(Rule):
    """Turn the raw value into the field's type before it is checked (``"24h"`` into a
    ``timedelta``); other values pass through unchanged."""

    _BEFORE = True


@dataclass(frozen=True)
class Limits:
    """Bounds on a number (``ge``, ``gt``, ``le``) or on a collection's size.

    A bounded number is strict, in any record: an ``int`` is never a float (``4.0``), a
    string (``"4"``) or a boolean, a ``float`` is never a string, and is finite.
    """

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    min_length: int | None = None
    max_length: int | None = None

    def __get_pydantic_core_schema__(
        self, source: type[Any], handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        from pydantic import Field, Strict

        bounds: dict[str, Any] = {k: v for k, v in vars(self).items() if v is not None}
        if source is float:
            bounds["allow_inf_nan"] = False
        if source in (int, float):
            return handler(Annotated[source, Field(**bounds), Strict()])
        return handler(Annotated[source, Field(**bounds)])


@dataclass(frozen=True)
class Lax:
    """Accept the value's usual coercions in a strict record (a YAML list for a tuple)."""

    def __get_pydantic_core_schema__(
        self, source: type[Any], handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        from pydantic import Strict

        return handler(Annotated[source, Strict(False)])
