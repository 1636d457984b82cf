"""Which tasks may be submitted over HTTP, and the pydantic model their arguments must satisfy."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError, create_model

from svc.errors import InvalidArguments
from svc.wire import jsonvalues

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class ExposedTask:
    """A task that HTTP clients may submit, with its argument schema."""

    name: str
    schema: type[BaseModel]
    description: str

    def validate(
        self, args: list[Any], kwargs: dict[str, Any], first_supplied: bool = False
    ) -> dict[str, Any]:
        """Bind positional and keyword arguments to the schema; return them as validated kwargs.

        With ``first_supplied`` the first parameter is left out: Celery passes it at run time (the
        previous result in a chain, the group's results to a chord callback).
        Raises InvalidArguments (422) with pydantic's error list when they do not fit, and when they hold
        a value JSON would not carry exactly to the worker (svc.wire.jsonvalues).
        """
        inexact = jsonvalues.inexact_reason([args, kwargs])
        if inexact is not None:
            raise InvalidArguments(f"the arguments hold {inexact}, which JSON cannot carry exactly")
        schema = self._without_first() if first_supplied else self.schema
        fields = list(schema.model_fields)
        if len(args) > len(fields):
            raise InvalidArguments(f"{self.name} takes at most {len(fields)} positional arguments")
        bound = dict(zip(fields, args, strict=False))
        if kwargs:
            clash = sorted(bound.keys() & kwargs.keys())
            if clash:
                raise InvalidArguments(f"{self.name} got multiple values for {', '.join(clash)}")
            bound.update(kwargs)
        try:
            model = schema.model_validate(bound)
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_context=False, include_input=False)
            raise InvalidArguments(f"arguments do not match {self.name}'s schema", errors=errors) from None
        return model.model_dump(mode="json", exclude_unset=True)

    def _without_first(self) -> type[BaseModel]:
        """The schema minus its first field (cached per task)."""
        cached = _WITHOUT_FIRST.get(self.name)
        if cached is None:
            fields = {
                name: (info.annotation, info) for name, info in list(self.schema.model_fields.items())[1:]
            }
            cached = create_model(  # type: ignore[call-overload]
                f"{self.schema.__name__}Rest", __config__=self.schema.model_config, **fields
            )
            _WITHOUT_FIRST[self.name] = cached
        return cached

    def catalogue_entry(self) -> dict[str, Any]:
        """How GET /tasks describes this task."""
        return {"name": self.name, "description": self.description, "schema": self.schema.model_json_schema()}


EXPOSED: dict[str, ExposedTask] = {}
_WITHOUT_FIRST: dict[str, type[BaseModel]] = {}


def exposed_task(schema: type[BaseModel]) -> Callable[[F], F]:
    """Mark a Celery task as submittable over HTTP with arguments validated by ``schema``."""

    def register(task: F) -> F:
        name: str = getattr(task, "name")  # noqa: B009 - a Celery task object
        doc = (task.__doc__ or "").strip().splitlines()
        EXPOSED[name] = ExposedTask(name=name, schema=schema, description=doc[0] if doc else "")
        return task

    return register
