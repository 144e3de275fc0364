"""Chat templates are code a serving host runs: each is checked before a model is accepted.

Two checks, for two kinds of reach. Reading the template's tokens finds a reach for Python internals
(`x.__class__`, `x['__globals__']`, `x|attr('_y')`) in any branch, reached or not. Rendering it in
transformers' sandbox with several conversation shapes finds what reading cannot (names built at run
time) on the branches those shapes reach, and a template that never finishes. The rendering runs in a
child process that is killed at a deadline: a limit the template's own code cannot swallow.

`python -m tasks.chat_templates` is that child: it reads `{name: template}` as JSON on stdin once it
has said `ready`, and writes one JSON line per template it starts and per template it refuses.
"""

import json
import resource
import select
import subprocess
import sys
from typing import Any

from quantforge.errors import QuantforgeError

# Real templates render in milliseconds; this is for all templates and shapes together, after start-up.
RENDER_SECONDS = 5.0
STARTUP_SECONDS = 120.0  # importing transformers' template code on a loaded host
# Rendering builds strings; a template that asks for gigabytes is refused, not allowed to swap the host.
CHILD_DATA_BYTES = 2 * 2**30

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
}
TOOL_SHAPES: dict[str, tuple[list[dict], dict[str, Any]]] = {  # for templates that mention tools
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
    """Refuse, in one line, a template that reaches for Python internals, asks for gigabytes, or does
    not finish rendering every shape within `RENDER_SECONDS`."""
    if not templates:
        return
    command = [sys.executable, "-m", "tasks.chat_templates"]
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as child:
        try:
            ready, _, _ = select.select([child.stdout], [], [], STARTUP_SECONDS)
            if not ready or child.stdout.readline() != "ready\n":
                child.kill()
                raise RuntimeError(
                    f"the chat template renderer did not start: {child.communicate()[1][-500:]}"
                )
            try:
                output, errors = child.communicate(json.dumps(templates), timeout=RENDER_SECONDS)
            except subprocess.TimeoutExpired:
                child.kill()
                started = [line["template"] for line in _lines(child.communicate()[0]) if "template" in line]
                raise QuantforgeError(
                    f"`model`: chat template {started[-1] if started else '?'!r} of {repo!r} did not finish "
                    f"rendering within {RENDER_SECONDS:g} s (refused)"
                ) from None
        finally:
            child.kill()  # whatever happened above, no renderer outlives the check
    lines = _lines(output)
    if child.returncode != 0 or not lines or lines[-1] != {"done": True}:
        raise RuntimeError(f"the chat template renderer failed ({child.returncode}): {errors[-500:]}")
    for line in lines:
        if "refused" in line:
            raise QuantforgeError(
                f"`model`: chat template {line['template']!r} of {repo!r} {line['refused']}; refused"
            )


def _lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines()]


def unsafe_reach(template: str) -> str | None:
    """The first `.name`, `['name']` or `attr('name')` with a leading underscore in the template's
    tokens, reached or not: the sandbox forbids exactly these, but only on a branch that runs."""
    from jinja2.exceptions import TemplateSyntaxError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    try:
        tokens = [(kind, value) for _, kind, value in ImmutableSandboxedEnvironment().lex(template)]
    except TemplateSyntaxError:
        return None  # nothing renders it either: it cannot run
    tokens = [token for token in tokens if token[0] != "whitespace"]
    padded = [*tokens, ("", ""), ("", "")]
    for at in range(len(tokens)):
        (kind1, value1), (kind2, value2), (kind3, value3) = padded[at : at + 3]
        if (kind1, value1, kind2) == ("operator", ".", "name") and value2.startswith("_"):
            return f".{value2}"
        if (kind1, value1, kind2) == ("operator", "[", "string") and value2[1:].startswith("_"):
            return f"[{value2}]"
        if (kind1, value1, value2, kind3) == ("name", "attr", "(", "string") and value3[1:].startswith("_"):
            return f"attr({value3})"
    return None


def _verdict(template: str) -> str | None:
    """Why this template is refused, or None: read first, then rendered with every shape."""
    from jinja2.exceptions import SecurityError
    from transformers.utils.chat_template_utils import render_jinja_template

    if reach := unsafe_reach(template):
        return f"tries unsafe operations (`{reach[:80]}`)"
    shapes = SHAPES | (TOOL_SHAPES if "tools" in template else {})
    for name, (messages, options) in shapes.items():
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
