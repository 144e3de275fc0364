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
    model: type[BaseModel], defaults: BaseModel | None = None, omit: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], FieldInfo, Any]]:
    """Each field's path, info and default, a nested model's fields in its place (its default instance's
    values as their defaults); the fields named in `omit` left out."""
    for name, field in model.model_fields.items():
        if name in omit:
            continue
        default = (
            field.get_default(call_default_factory=True) if defaults is None else getattr(defaults, name)
        )
        if _is_model(field.annotation):
            nested = default if isinstance(default, BaseModel) else None
            for path, leaf, leaf_default in leaf_fields(field.annotation, nested):
                yield (name, *path), leaf, leaf_default
        else:
            yield (name,), field, default


def field_paths(model: type[BaseModel], omit: tuple[str, ...] = ()) -> dict[str, tuple[str, ...]]:
    """Option name (the leaf field's name) to its path in `model`; two leaves may not share a name."""
    paths = [path for path, _, _ in leaf_fields(model, omit=omit)]
    names = [path[-1] for path in paths]
    if clashes := sorted({name for name in names if names.count(name) > 1}):
        raise TypeError(f"{model.__name__}: fields {clashes} would be one option each")
    return dict(zip(names, paths, strict=True))


def options_from(
    model: type[BaseModel],
    arguments: tuple[str, ...] = (),
    omit: tuple[str, ...] = (),
    aliases: dict[str, tuple[str, ...]] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Make `command(values, **own)` a typer command with one option per leaf field of `model` (the fields
    named in `arguments` positional, those in `omit` left for the command to set, `aliases` adding option
    names), calling it with the keyword arguments of `model`, nested as the model is.

    The command's own keyword-only parameters are options too: a typer-annotated one (`--json`) is passed
    as it is; one annotated with a pydantic model gets one option per field of that model, in a help
    panel named by the model's `title`, and is passed an instance.
    """
    paths = field_paths(model, omit)
    aliases = aliases or {}
    parameters = [
        _parameter(path[-1], field, default, path[-1] in arguments, aliases.get(path[-1], ()))
        for path, field, default in leaf_fields(model, omit=omit)
    ]

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        own = [p for p in inspect.signature(command).parameters.values() if p.kind is p.KEYWORD_ONLY]
        groups = {p.name: (p.annotation, field_paths(p.annotation)) for p in own if _is_model(p.annotation)}
        plain = [p for p in own if p.name not in groups]
        grouped = [
            _parameter(path[-1], field, default, panel=group.model_config.get("title"))
            for group, _ in groups.values()
            for path, field, default in leaf_fields(group)
        ]
        names = [p.name for p in (*parameters, *plain, *grouped)]
        if clashes := sorted({name for name in names if names.count(name) > 1}):
            raise TypeError(f"{command.__name__}: options {clashes} would be given twice")

        def from_options(**options: Any) -> Any:
            given = {p.name: options[p.name] for p in plain}
            given |= {name: group(**_nested(leaves, options)) for name, (group, leaves) in groups.items()}
            return command(_nested(paths, options), **given)

        from_options.__name__, from_options.__doc__ = command.__name__, command.__doc__
        from_options.__signature__ = inspect.Signature([*parameters, *plain, *grouped])  # what typer reads
        return from_options

    return decorate


def _nested(paths: dict[str, tuple[str, ...]], options: dict[str, Any]) -> dict[str, Any]:
    """The options named in `paths` as keyword arguments of their model, nested as its fields are."""
    values: dict[str, Any] = {}
    for name, path in paths.items():
        *parents, leaf = path
        target = values
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = options[name]
    return values


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _parameter(
    name: str,
    field: FieldInfo,
    default: Any,
    argument: bool = False,
    aliases: tuple[str, ...] = (),
    panel: str | None = None,
) -> inspect.Parameter:
    # Named here when aliased, and a flag off by default as `--x` alone: `--no-x` would say the default.
    named = aliases or (field.annotation is bool and default is False)
    decls = (f"--{name.replace('_', '-')}", *aliases) if named else ()
    if argument:
        info = typer.Argument(help=field.description)
    else:
        info = typer.Option(*decls, help=field.description, rich_help_panel=panel)
    return inspect.Parameter(
        name,
        inspect.Parameter.KEYWORD_ONLY,  # any order: required and optional mixed
        default=inspect.Parameter.empty if default is PydanticUndefined else default,
        annotation=Annotated[field.annotation, info],
    )
