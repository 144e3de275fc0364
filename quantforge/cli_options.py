"""Typer parameters generated from a pydantic model's fields: each option's name, default and help are the
field's, written once (docs/decisions.md, "The CLI's options are the request's fields")."""

import inspect
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined


def leaf_fields(
    model: type[BaseModel], defaults: BaseModel | None = None
) -> Iterator[tuple[tuple[str, ...], FieldInfo, Any]]:
    """Each field's path, info and default, a nested model's fields in its place (its default instance's
    values as their defaults)."""
    for name, field in model.model_fields.items():
        default = (
            field.get_default(call_default_factory=True) if defaults is None else getattr(defaults, name)
        )
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            nested = default if isinstance(default, BaseModel) else None
            for path, leaf, leaf_default in leaf_fields(field.annotation, nested):
                yield (name, *path), leaf, leaf_default
        else:
            yield (name,), field, default


def field_paths(model: type[BaseModel]) -> dict[str, tuple[str, ...]]:
    """Option name (the leaf field's name) to its path in `model`; two leaves may not share a name."""
    paths = [path for path, _, _ in leaf_fields(model)]
    names = [path[-1] for path in paths]
    if clashes := sorted({name for name in names if names.count(name) > 1}):
        raise TypeError(f"{model.__name__}: fields {clashes} would be one option each")
    return dict(zip(names, paths, strict=True))


def options_from(
    model: type[BaseModel], arguments: tuple[str, ...] = ()
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Make `command(values, **own)` a typer command with one option per leaf field of `model` (the fields
    named in `arguments` positional), calling it with the keyword arguments of `model`, nested as the model
    is. The command's own keyword-only parameters (typer-annotated: options that are no field, like
    `--json`) are options too, passed to it as they are."""
    paths = field_paths(model)
    parameters = [
        _parameter(path[-1], field, default, path[-1] in arguments)
        for path, field, default in leaf_fields(model)
    ]

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        own = [p for p in inspect.signature(command).parameters.values() if p.kind is p.KEYWORD_ONLY]
        if clashes := sorted(p.name for p in own if p.name in paths):
            raise TypeError(f"{command.__name__}: parameters {clashes} are fields of {model.__name__}")

        def from_options(**options: Any) -> Any:
            values: dict[str, Any] = {}
            for name, path in paths.items():
                *parents, leaf = path
                target = values
                for parent in parents:
                    target = target.setdefault(parent, {})
                target[leaf] = options[name]
            return command(values, **{p.name: options[p.name] for p in own})

        from_options.__name__, from_options.__doc__ = command.__name__, command.__doc__
        from_options.__signature__ = inspect.Signature([*parameters, *own])  # what typer reads
        return from_options

    return decorate


def _parameter(name: str, field: FieldInfo, default: Any, argument: bool) -> inspect.Parameter:
    if argument:
        info = typer.Argument(help=field.description)
    elif field.annotation is bool and default is False:  # `--x` alone: `--no-x` would say the default
        info = typer.Option(f"--{name.replace('_', '-')}", help=field.description)
    else:
        info = typer.Option(help=field.description)
    return inspect.Parameter(
        name,
        inspect.Parameter.KEYWORD_ONLY,  # any order: required and optional mixed
        default=inspect.Parameter.empty if default is PydanticUndefined else default,
        annotation=Annotated[field.annotation, info],
    )
