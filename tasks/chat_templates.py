"""Chat templates are code a serving host runs: each is checked before a model is accepted.

Two checks, for two kinds of reach. Reading the template's syntax tree, as transformers parses it, finds
a reach for Python internals (`x.__class__`, `x['\\x5f_globals__']`, `x|attr('_y')`,
`map(attribute='__class__')`, a `'__class__'` kept in a variable) in any branch, reached or not.
Rendering it in transformers' sandbox with seven conversation shapes finds what reading cannot (names
built at run time) on the branches those shapes reach, and a template that never finishes. The
rendering runs in a child process that is killed at a deadline: a limit the template's own code cannot
swallow.

`python -m quantforge.tasks.chat_templates` is that child: it reads `{name: template}` as JSON on stdin
once it has said `ready`, and writes one JSON line per template it starts and per template it refuses.
"""

import hashlib
import json
import resource
import select
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

from quantforge.core.errors import QuantforgeError
from quantforge.core.pass_records import check_once
from quantforge.core.paths import data_dir

# Real templates render in milliseconds; this is for all templates and shapes together, after start-up.
RENDER_SECONDS = 5.0
STARTUP_SECONDS = 120.0  # importing transformers' template code on a loaded host
# Rendering builds strings; a template that asks for gigabytes is refused, not allowed to swap the host.
CHILD_DATA_BYTES = 2 * 2**30
RENDERER = ("-m", "quantforge.tasks.chat_templates")  # the child's arguments to the interpreter

USER = {"role": "user", "content": "What is the capital of France?"}
SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
ASSISTANT = {"role": "assistant", "content": "Paris."}
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city."}},
            "required": ["city"],
        },
    },
}
TOOL_CALL = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
# (messages, render_jinja_template options): the shapes a serving host renders.
SHAPES: dict[str, tuple[list[dict], dict[str, Any]]] = {
    "user": ([USER], {"add_generation_prompt": True}),
    "system + user": ([SYSTEM, USER], {"add_generation_prompt": True}),
    "multi-turn": ([USER, ASSISTANT, USER], {"add_generation_prompt": True}),
    "system + long multi-turn": (
        [SYSTEM, USER, ASSISTANT, USER, ASSISTANT, USER],
        {"add_generation_prompt": True},
    ),
    "assistant prefix": (
        [USER, {"role": "assistant", "content": "The capital is"}],
        {"continue_final_message": True},
    ),
    "tools": ([SYSTEM, USER], {"tools": [TOOL], "add_generation_prompt": True}),
    "tool call and result": (
        [
            USER,
            {"role": "assistant", "content": "", "tool_calls": [TOOL_CALL]},
            {"role": "tool", "name": "get_weather", "content": "Sunny, 21 C"},
        ],
        {"tools": [TOOL], "add_generation_prompt": True},
    ),
}


def check_chat_templates(templates: dict[str, str], repo: str) -> None:
    """Refuse, in one line, a template that reaches for Python internals, asks for gigabytes, does not
    finish rendering every shape within `RENDER_SECONDS`, or makes the renderer fail.

    Templates that passed are remembered by their text and the checker (this module's code and
    transformers' version): the renderer's start costs ~1.5 s, which a rerun of the same source would
    otherwise pay every time. Refusals are not remembered: a refused source is checked again.
    """
    if templates:
        check_once(_pass_record(templates), lambda: _render_in_child(templates, repo))


def _pass_record(templates: dict[str, str]) -> Path:
    """The file that says these templates passed this checker."""
    digest = hashlib.sha256(json.dumps(templates, sort_keys=True).encode())
    digest.update(Path(__file__).read_bytes())
    digest.update(version("transformers").encode())
    return data_dir() / "templates-checked" / digest.hexdigest()


def _render_in_child(templates: dict[str, str], repo: str) -> None:
    with subprocess.Popen(
        [sys.executable, *RENDERER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as child:
        try:
            ready, _, _ = select.select([child.stdout], [], [], STARTUP_SECONDS)
            if not ready or child.stdout.readline() != "ready\n":
                child.kill()  # before any template was sent: the host's problem, not the repo's
                raise RuntimeError(
                    f"the chat template renderer did not start: {child.communicate()[1][-500:]}"
                )
            try:
                output, errors = child.communicate(json.dumps(templates), timeout=RENDER_SECONDS)
            except subprocess.TimeoutExpired:
                child.kill()
                raise QuantforgeError(
                    f"`model`: chat template {_last_started(child.communicate()[0])!r} of {repo!r} did not "
                    f"finish rendering within {RENDER_SECONDS:g} s (refused)"
                ) from None
        finally:
            child.kill()  # whatever happened above, no renderer outlives the check
    lines = _lines(output)
    for line in lines:
        if "refused" in line:
            raise QuantforgeError(
                f"`model`: chat template {line['template']!r} of {repo!r} {line['refused']}; refused"
            )
    if child.returncode != 0 or not lines or lines[-1] != {"done": True}:
        # After `ready` only the templates run: one of them broke the renderer (a hostile repo can).
        last = [line for line in errors.splitlines() if line.strip()][-1:] or ["no message"]
        reason = " ".join(last[0].split())[:120]
        raise QuantforgeError(
            f"`model`: chat template {_last_started(output)!r} of {repo!r} made the renderer fail "
            f"(exit {child.returncode}: {reason}); refused"
        )


def _lines(output: str) -> list[dict]:
    """The child's JSON lines; a line cut short by a kill is not one."""
    lines = []
    for text in output.splitlines():
        try:
            line = json.loads(text)
        except ValueError:
            continue
        if isinstance(line, dict):
            lines.append(line)
    return lines


def _last_started(output: str) -> str:
    started = [line["template"] for line in _lines(output) if "template" in line]
    return started[-1] if started else "?"


def unsafe_reach(template: str) -> str | None:
    """The first reach for a name with a leading underscore in the template's syntax tree, reached or not
    (the sandbox forbids these, but only on a branch that runs), in source order:
    - an attribute `.name` (also `{% set ns._x = ... %}`);
    - an item `['_name']`: the parser has decoded escapes, so `['\\x5f_class__']` is `['__class__']`;
    - anywhere else, a string constant that names a private attribute path: a dotted name with a part
      that starts with `_` and is not only underscores. This finds `attr('__class__')`,
      `map(attribute='x.__class__')`, `selectattr('__class__')`, `sort`/`groupby`/`sum`/`unique`/`min`/
      `max(attribute=...)`, `*['__class__']` and `{% set n = '__class__' %}{{ x[n] }}` alike, without a
      list of which filter takes a name in which argument. Strings a real template writes (`'_'`,
      `'__'`, `' _ '`, `'<tool_call>'`, prose) are no such name. Template text outside `{{ }}` and
      `{% %}` is output, not a constant: never read as a name.
    Names built at run time (`'_' ~ '_class__'`) are left to rendering."""
    from jinja2 import nodes
    from jinja2.exceptions import TemplateSyntaxError
    from transformers.utils.chat_template_utils import _compile_jinja_template

    # transformers' own environment (its `generation` tag, `break`/`continue`): a template this cannot
    # parse, transformers cannot either, so nothing renders it.
    environment = _compile_jinja_template("").environment
    try:
        tree = environment.parse(template)
    except TemplateSyntaxError:
        return None
    # Iterative, in source order: an expression's receiver (`x` of `x.a`, `x|f`, `x[i]`) before itself.
    stack: list[nodes.Node | str] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            return node
        receiver = (
            node.node if isinstance(node, (nodes.Getattr, nodes.Getitem, nodes.Filter, nodes.Test)) else None
        )
        stack.extend(reversed([child for child in node.iter_child_nodes() if child is not receiver]))
        if reach := _own_reach(node):
            stack.append(reach)
        if receiver is not None:
            stack.append(receiver)
    return None


def _own_reach(node: Any) -> str | None:
    from jinja2 import nodes

    if isinstance(node, (nodes.Getattr, nodes.NSRef)) and node.attr.startswith("_"):
        return f".{node.attr}"
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        if isinstance(node.arg.value, str) and node.arg.value.startswith("_"):
            return f"[{node.arg.value!r}]"
    if isinstance(node, (nodes.Filter, nodes.Test)):
        named = [(None, arg) for arg in node.args] + [(kw.key, kw.value) for kw in node.kwargs]
        for key, value in named:
            if isinstance(value, nodes.Const) and _private_name(value.value):
                return f"{node.name}({f'{key}=' if key else ''}{value.value!r})"
    if isinstance(node, nodes.Const) and _private_name(node.value):
        return repr(node.value)
    return None


def _private_name(value: object) -> bool:
    """Whether a string is an attribute path (`a.b.0`, as `attribute=` reads it) with a private part."""
    if not isinstance(value, str):
        return False
    parts = value.split(".")
    return all(part.isidentifier() or part.isdigit() for part in parts) and any(
        part.startswith("_") and part.strip("_") for part in parts
    )


def _verdict(template: str) -> str | None:
    """Why this template is refused, or None: read first, then rendered with every shape."""
    from jinja2.exceptions import SecurityError
    from transformers.utils.chat_template_utils import render_jinja_template

    try:
        reach = unsafe_reach(template)
    except MemoryError:  # a huge template, read under the child's memory cap
        return f"needs more than {CHILD_DATA_BYTES // 2**30} GiB to read"
    except RecursionError:  # a serving host with a deeper stack might parse and run it: refused
        return "is nested too deeply to read"
    if reach:
        return f"tries unsafe operations (`{reach[:80]}`)"
    for name, (messages, options) in SHAPES.items():
        try:
            render_jinja_template(conversations=[messages], chat_template=template, **options)
        except SecurityError as error:
            return f"tries unsafe operations with the shape {name!r} ({str(error)[:120]})"
        except MemoryError:
            return f"needs more than {CHILD_DATA_BYTES // 2**30} GiB to render the shape {name!r}"
        except Exception:  # a shape this template does not support (it may raise on purpose): not a risk
            continue
    return None


def _child() -> None:
    from transformers.utils.chat_template_utils import render_jinja_template  # noqa: F401  (the slow import)

    resource.setrlimit(resource.RLIMIT_DATA, (CHILD_DATA_BYTES, CHILD_DATA_BYTES))
    print("ready", flush=True)
    for name, template in json.load(sys.stdin).items():
        print(json.dumps({"template": name}), flush=True)  # the parent names it if the deadline hits
        if reason := _verdict(template):
            print(json.dumps({"template": name, "refused": reason}), flush=True)
    print(json.dumps({"done": True}), flush=True)


if __name__ == "__main__":
    _child()
