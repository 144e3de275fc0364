"""Chat templates: read for reaches into Python internals, rendered with several conversation shapes in
transformers' sandbox, in a child process killed at a deadline. Each check is one real renderer process."""

import time

import psutil
import pytest

from quantforge.errors import QuantforgeError
from tasks.chat_templates import RENDER_SECONDS, check_chat_templates

# Builds "__class__" at run time, so reading the template cannot see it: only rendering can.
HIDDEN = "{% set u = 'x_'[1] %}{{ (''|attr(u ~ u ~ 'class' ~ u ~ u)).mro() }}"
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def renderers() -> list[psutil.Process]:
    return [
        p
        for p in psutil.Process().children(recursive=True)
        if "tasks.chat_templates" in " ".join(p.cmdline())
    ]


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        # unreachable by one message, caught by reading
        ("{% if messages|length > 2 %}{{ ''.__class__.__mro__ }}{% endif %}", r"\(`\.__class__`\)"),
        ("{% if false %}{{ x['__globals__'] }}{% endif %}", r"\(`\['__globals__'\]`\)"),
        # names built at run time, on branches only some shapes reach: caught by rendering them
        ("{% if messages|length > 2 %}" + HIDDEN + "{% endif %}", "with the shape 'multi-turn'"),
        (
            "{% if messages[0].role == 'system' %}" + HIDDEN + "{% endif %}",
            "with the shape 'system \\+ user'",
        ),
        ("{% if tools %}" + HIDDEN + "{% endif %}" + CHATML, "with the shape 'tools'"),
        ("{% if messages[-1].role == 'assistant' %}" + HIDDEN + "{% endif %}", "'assistant prefix'"),
    ],
)
def test_unsafe_code_on_any_branch_is_refused(template, reason):
    with pytest.raises(
        QuantforgeError, match=rf"^`model`: chat template 'x.jinja' of 'acme/m' tries unsafe .*{reason}"
    ):
        check_chat_templates({"ok.jinja": CHATML, "x.jinja": template}, "acme/m")


def test_a_template_that_never_finishes_is_killed_at_the_deadline():
    endless = "{% for i in range(100000) %}{% for j in range(100000) %}{{ j }}{% endfor %}{% endfor %}"
    started = time.monotonic()
    with pytest.raises(
        QuantforgeError, match=r"^`model`: chat template 'tool_use' of 'acme/m' did not finish"
    ):
        check_chat_templates({"default": CHATML, "tool_use": endless}, "acme/m")
    assert time.monotonic() - started < RENDER_SECONDS + 60  # start-up of the renderer, then the deadline
    assert renderers() == []  # killed, not left spinning


def test_a_template_asking_for_gigabytes_is_refused():
    with pytest.raises(QuantforgeError, match=r"'big' of 'acme/m' needs more than 2 GiB .* shape 'user'"):
        check_chat_templates({"big": "{{ 'x' * 3221225472 }}"}, "acme/m")


def test_real_templates_pass_even_when_they_refuse_a_shape():
    no_system = (
        "{% if messages[0].role == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
        + CHATML
    )
    tools = "{% if tools %}{{ tools | tojson }}{% endif %}" + CHATML
    check_chat_templates({"chatml": CHATML, "no_system": no_system, "tools": tools}, "acme/m")
    assert renderers() == []
