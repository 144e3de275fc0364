"""Chat templates: read for reaches into Python internals, rendered with seven conversation shapes in
transformers' sandbox, in a child process killed at a deadline. The verdicts are asked in-process (one
transformers import for all); the child's deadline, memory cap and failure each have one process test."""

import time

import psutil
import pytest

from quantforge.core.errors import QuantforgeError
from quantforge.tasks import chat_templates
from quantforge.tasks.chat_templates import (
    RENDER_SECONDS,
    SHAPES,
    _verdict,
    check_chat_templates,
    unsafe_reach,
)

# Builds "__class__" at run time, so reading the template cannot see it: only rendering can.
HIDDEN = "{% set u = 'x_'[1] %}{{ (''|attr(u ~ u ~ 'class' ~ u ~ u)).mro() }}"
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
UNREACHED = "{% if false %}{{ X }}{% endif %}"  # X: the reach, on a branch no shape takes


def renderers() -> list[psutil.Process]:
    return [
        p
        for p in psutil.Process().children(recursive=True)
        if "quantforge.tasks.chat_templates" in " ".join(p.cmdline())
    ]


@pytest.mark.parametrize(
    ("reach", "shown"),
    [
        ("''.__class__.__mro__", ".__class__"),
        ("x['__globals__']", "['__globals__']"),
        ("x['\\x5f_class__']", "['__class__']"),  # the escape is decoded by the parser
        ("x|attr('_TemplateReference__context')", "attr('_TemplateReference__context')"),
        ("messages|map(attribute='__class__')|list", "map(attribute='__class__')"),
        ("messages|map('attr', '__class__')|list", "map('__class__')"),
        ("messages|selectattr('__class__')|list", "selectattr('__class__')"),
        ("messages|rejectattr('content.__class__')|list", "rejectattr('content.__class__')"),
        ("messages|sort(attribute='__class__')", "sort(attribute='__class__')"),
        ("messages|groupby('__class__')", "groupby('__class__')"),
        ("messages|sum(attribute='__class__')", "sum(attribute='__class__')"),
        ("messages|unique(false, '__class__')|list", "unique('__class__')"),
        ("messages|max(attribute='__class__')", "max(attribute='__class__')"),
        ("messages|selectattr(*['__class__'])|list", "'__class__'"),
        ("x[n]", "'__class__'"),  # `n` set to '__class__' before the branch
    ],
)
def test_a_literal_reach_on_an_unreached_branch_is_read(reach, shown):
    template = (
        ("{% set n = '__class__' %}" if "[n]" in reach else "") + UNREACHED.replace("X", reach) + CHATML
    )
    assert unsafe_reach(template) == shown
    assert _verdict(template) == f"tries unsafe operations (`{shown}`)"


def test_transformers_tags_do_not_hide_a_reach():
    """`generation` and `break` parse only in transformers' environment: read with it, not a plain one."""
    template = (
        "{% for m in messages %}{% generation %}{{ m.content }}{% endgeneration %}{% break %}{% endfor %}"
        + UNREACHED.replace("X", "m.__class__")
    )
    assert unsafe_reach(template) == ".__class__"


@pytest.mark.parametrize(
    ("template", "shape"),
    [
        ("{% if messages|length > 2 %}" + HIDDEN + "{% endif %}", "multi-turn"),
        ("{% if messages[0].role == 'system' %}" + HIDDEN + "{% endif %}", "system + user"),
        ("{% if tools %}" + HIDDEN + "{% endif %}" + CHATML, "tools"),
        ("{% if messages[-1].role == 'assistant' %}" + HIDDEN + "{% endif %}", "assistant prefix"),
        # never says "tools": the tool shapes are rendered all the same
        ("{% for m in messages %}{% if m.role == 'tool' %}" + HIDDEN + "{% endif %}{% endfor %}", None),
    ],
)
def test_a_name_built_at_run_time_is_caught_by_the_shape_that_reaches_it(template, shape):
    assert unsafe_reach(template) is None  # reading cannot see it
    verdict = _verdict(template)
    assert verdict is not None and verdict.startswith("tries unsafe operations with the shape ")
    assert f"{shape or 'tool call and result'!r}" in verdict


def test_seven_shapes_are_rendered():
    assert len(SHAPES) == 7 and {"tools", "tool call and result"} <= set(SHAPES)


def test_real_templates_pass_even_when_they_refuse_a_shape():
    no_system = (
        "{% if messages[0].role == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
        + CHATML
    )
    tools = "{% if tools %}{{ tools | tojson }}{% endif %}" + CHATML
    # Underscores a real template writes: separators, a `generation` block, `loop`, a namespace.
    strings = (
        "{% set ns = namespace(last='') %}{% for m in messages %}{% generation %}"
        "{{ m.role|replace('_', ' ') ~ '__' ~ ' _ ' ~ loop.index0 }}{% endgeneration %}"
        "{% set ns.last = m.role %}{% endfor %}<tool_call>{{ ns.last }}_end __init__"
    )
    for template in (CHATML, no_system, tools, strings):
        assert _verdict(template) is None, template


def test_a_template_too_big_or_deep_to_read_is_refused(monkeypatch):
    deep = "{{ " + "(" * 100_000 + "1" + ")" * 100_000 + " }}"
    assert _verdict(deep) == "is nested too deeply to read"

    def out_of_memory(template):
        raise MemoryError

    monkeypatch.setattr(chat_templates, "unsafe_reach", out_of_memory)
    assert _verdict(CHATML) == "needs more than 2 GiB to read"


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
    with pytest.raises(
        QuantforgeError,
        match=r"^`model`: chat template 'big' of 'acme/m' needs more than 2 GiB .* shape 'user'; refused$",
    ):
        check_chat_templates({"ok": CHATML, "big": "{{ 'x' * 3221225472 }}"}, "acme/m")
    assert renderers() == []


def test_a_renderer_that_fails_is_one_line_naming_the_last_template(monkeypatch):
    """A child that dies after `ready` (as one did on a MemoryError no check caught): the parent's words."""
    crash = (
        "import json, sys; print('ready', flush=True); templates = json.load(sys.stdin); "
        "print(json.dumps({'template': 'ok'}), flush=True); "
        "print(json.dumps({'template': 'huge'}), flush=True); raise MemoryError"
    )
    monkeypatch.setattr(chat_templates, "RENDERER", ("-c", crash))
    with pytest.raises(QuantforgeError) as failed:
        check_chat_templates({"ok": CHATML, "huge": "{{ x }}"}, "acme/m")
    message = str(failed.value)
    assert message == (
        "`model`: chat template 'huge' of 'acme/m' made the renderer fail (exit 1: MemoryError); refused"
    )


def test_templates_that_passed_are_not_rendered_again_but_changed_or_refused_ones_are(monkeypatch):
    check_chat_templates({"default": CHATML}, "acme/m")  # renders (or was remembered by an earlier test)
    recorded = chat_templates._pass_record({"default": CHATML})
    assert recorded.is_file()

    broken = "import sys; print('ready', flush=True); sys.stdin.read(); raise SystemExit(3)"
    monkeypatch.setattr(chat_templates, "RENDERER", ("-c", broken))
    check_chat_templates({"default": CHATML}, "acme/m")  # remembered: the broken renderer never starts
    changed = {"default": CHATML + "\n"}
    with pytest.raises(QuantforgeError, match=r"made the renderer fail \(exit 3"):
        check_chat_templates(changed, "acme/m")
    assert not chat_templates._pass_record(changed).exists()  # a refusal is checked again next time
