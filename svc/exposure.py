"""Which of an app's tasks HTTP clients may submit, and the pydantic model their arguments must satisfy.

``svc.expose`` marks a task of one Celery app: the mark is kept on that app (never in a global), so two
apps in one process each expose their own tasks, and svc's demo tasks exist only in svc's demo app.
``SVC_EXPOSE`` adds tasks by name or glob pattern, for an app whose code cannot change. The gateway
builds the app's catalogue once, at startup (``exposed_tasks``): a name exposed twice with another task
or another schema, or a signature no schema can be derived from, stops the startup with a
ConfigurationError; nothing is ever silently replaced.

A derived schema has one field per parameter of the task function, typed by its annotation (``Any``
without one) and required unless it has a default; ``**kwargs`` lets other keywords through, ``*args``
takes nothing from HTTP. Validation is pydantic's default (lax) mode, as for a FastAPI body; the values
the task receives are the validated ones, in their JSON form.
"""

from __future__ import annotations

import fnmatch
import inspect
import typing
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TypeVar, overload

from celery import Celery
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from svc.errors import ConfigurationError, InvalidArguments
from svc.wire import jsonvalues

T = TypeVar("T")
EXPOSURES = "svc_exposures"  # the attribute of a Celery app that lists its tasks' exposures
_TASK_RUN_DOC = "The body of the task executed by workers."  # celery.Task.run's own docstring


@dataclass(frozen=True)
class Exposure:
    """One ``svc.expose`` of one task: the task, and the model it was given (None: derive one)."""

    task: Any
    schema: type[BaseModel] | None


@overload
def expose(task: T, /, *, schema: type[BaseModel] | None = None) -> T: ...
@overload
def expose(*, schema: type[BaseModel] | None = None) -> Callable[[T], T]: ...
def expose(task: Any = inspect.Parameter.empty, /, *, schema: type[BaseModel] | None = None) -> Any:
    """Make a Celery task submittable over HTTP (``POST /tasks/{name}``, workflows, ``GET /tasks``).

    ``svc.expose(task)``, ``@svc.expose`` above ``@app.task``, or ``@svc.expose(schema=Model)``: its
    arguments are validated by ``Model`` if given, else by a schema derived from the task function's
    parameters and type hints. Returns the task unchanged. Raises TypeError at once for anything that
    is not a Celery task, or a ``schema`` that is not a pydantic model.
    """
    if schema is not None and not (isinstance(schema, type) and issubclass(schema, BaseModel)):
        raise TypeError(f"svc.expose(schema=...) takes a pydantic model class, got {schema!r}")
    if task is inspect.Parameter.empty:
        return lambda later: expose(later, schema=schema)
    app = _app_of(task)
    exposures: list[Exposure] = app.__dict__.setdefault(EXPOSURES, [])
    exposures.append(Exposure(task, schema))
    return task


def _app_of(task: Any) -> Celery:
    """The Celery app of a task (evaluating a lazy task, as any attribute access would)."""
    if task is None or isinstance(task, type | str) or not callable(task):
        raise TypeError(f"svc.expose takes a Celery task (from @app.task), got {task!r}")
    try:
        app, name = task.app, task.name
    except AttributeError:
        raise TypeError(f"svc.expose takes a Celery task (from @app.task), got {task!r}") from None
    if not isinstance(app, Celery) or not isinstance(name, str):
        raise TypeError(f"svc.expose takes a Celery task (from @app.task), got {task!r}")
    return app


@dataclass(frozen=True)
class ExposedTask:
    """A task that HTTP clients may submit, with its argument schema."""

    name: str
    schema: type[BaseModel]
    description: str
    json_schema: dict[str, Any] = field(repr=False)

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
        schema = self._without_first if first_supplied else self.schema
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

    @cached_property
    def _without_first(self) -> type[BaseModel]:
        """The schema minus its first field."""
        fields = {name: (info.annotation, info) for name, info in list(self.schema.model_fields.items())[1:]}
        model: type[BaseModel] = create_model(  # type: ignore[call-overload]
            f"{self.schema.__name__}Rest", __config__=self.schema.model_config, **fields
        )
        return model

    def catalogue_entry(self) -> dict[str, Any]:
        """How GET /tasks describes this task."""
        return {"name": self.name, "description": self.description, "schema": self.json_schema}


def description_of(task: Any) -> str:
    """The first line of the task function's docstring ("" without one)."""
    doc = inspect.getdoc(task.run) or ""
    if doc == _TASK_RUN_DOC:
        doc = inspect.getdoc(type(task)) or ""
    lines = doc.strip().splitlines()
    return lines[0] if lines else ""


def derive_schema(task: Any) -> type[BaseModel]:
    """A pydantic model of the task function's parameters (see the module's docstring)."""
    function = task.run
    try:
        signature = inspect.signature(function)
        hints = typing.get_type_hints(function, include_extras=True)
    except (TypeError, ValueError, NameError) as exc:
        raise ConfigurationError(
            f"cannot derive an argument schema for task {task.name!r} ({exc}); "
            "give one with svc.expose(schema=Model)"
        ) from None
    fields: dict[str, Any] = {}
    extra: typing.Literal["allow", "forbid"] = "forbid"
    for parameter in signature.parameters.values():
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            continue
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            extra = "allow"
            continue
        default = ... if parameter.default is inspect.Parameter.empty else parameter.default
        fields[parameter.name] = (hints.get(parameter.name, Any), default)
    title = "".join(part.capitalize() for part in task.name.replace(".", "_").split("_") if part)
    with warnings.catch_warnings():  # a parameter named like a BaseModel attribute ("json") is fine here
        warnings.simplefilter("ignore", UserWarning)
        try:
            model: type[BaseModel] = create_model(
                f"{title or 'Task'}Args", __config__=ConfigDict(extra=extra), **fields
            )
        except Exception as exc:  # pydantic's schema errors: an annotation it cannot validate
            raise ConfigurationError(
                f"cannot derive an argument schema for task {task.name!r} ({exc}); "
                "give one with svc.expose(schema=Model)"
            ) from None
    return model


def _describe(name: str, task: Any, schema: type[BaseModel] | None) -> ExposedTask:
    model = schema if schema is not None else derive_schema(task)
    try:
        json_schema = model.model_json_schema()
    except Exception as exc:  # a default or a type with no JSON schema
        raise ConfigurationError(
            f"the argument schema of task {name!r} has no JSON schema ({exc}); "
            "give one with svc.expose(schema=Model)"
        ) from None
    return ExposedTask(name, model, description_of(task), json_schema)


def exposed_tasks(app: Celery, patterns: Iterable[str] = ()) -> dict[str, ExposedTask]:
    """The catalogue of ``app``: every task marked with ``svc.expose``, and every task of the app whose
    name matches one of ``patterns`` (SVC_EXPOSE; Celery's own ``celery.*`` tasks only by name).

    Raises ConfigurationError when one name is exposed twice with another task or another schema, when a
    pattern matches nothing, or when a schema cannot be derived.
    """
    chosen: dict[str, Exposure] = {}
    for exposure in app.__dict__.get(EXPOSURES, []):
        name = exposure.task.name
        earlier = chosen.get(name)
        if earlier is not None and (
            earlier.task is not exposure.task or earlier.schema is not exposure.schema
        ):
            raise ConfigurationError(
                f"task name {name!r} is exposed twice (with another task or another schema): "
                "give each task a name of its own, or expose it once"
            )
        chosen[name] = exposure
    registered = {name: task for name, task in app.tasks.items()}
    for pattern in patterns:
        matched = [
            name
            for name in registered
            if fnmatch.fnmatchcase(name, pattern) and (name == pattern or not name.startswith("celery."))
        ]
        if not matched:
            raise ConfigurationError(f"SVC_EXPOSE pattern {pattern!r} matches no task of app {app.main!r}")
        for name in matched:
            chosen.setdefault(name, Exposure(registered[name], None))
    return {name: _describe(name, exposure.task, exposure.schema) for name, exposure in chosen.items()}
