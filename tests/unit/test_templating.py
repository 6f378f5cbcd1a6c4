"""Flagger's query dialect: what shipped queries use renders as Go does; the rest fails loudly."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import pytest

from flaggerpy.analysis import MetricTemplateModel
from flaggerpy.templating import MAX_EXPRESSION_DEPTH, MAX_RENDERED, TemplatingError, parse, render


def model(**overrides: Any) -> MetricTemplateModel:
    values: dict[str, Any] = {
        "name": "podinfo", "namespace": "test", "target": "podinfo-deploy",
        "service": "podinfo-svc", "ingress": "podinfo-ing", "route": "podinfo-route",
        "interval": "1m", "variables": MappingProxyType({"reporter": "source", "app": "x y"}),
    }
    values.update(overrides)
    return MetricTemplateModel(**values)


@pytest.mark.parametrize(("template", "expected"), [
    pytest.param("{{ name }}", "podinfo", id="name"),
    pytest.param("{{ namespace }}", "test", id="namespace"),
    pytest.param("{{ target }}", "podinfo-deploy", id="target"),
    pytest.param("{{ service }}", "podinfo-svc", id="service"),
    pytest.param("{{ ingress }}", "podinfo-ing", id="ingress"),
    pytest.param("{{ route }}", "podinfo-route", id="route"),
    pytest.param("{{ interval }}", "1m", id="interval"),
    pytest.param("{{name}}", "podinfo", id="no-spaces"),
    pytest.param("{{ variables.reporter }}", "source", id="variables-field"),
    pytest.param('{{ index variables "app" }}', "x y", id="index-variables"),
    pytest.param("{{ (variables).reporter }}", "source", id="parenthesised-field"),
    pytest.param("{{ variables }}", "map[app:x y reporter:source]", id="whole-map-like-go"),
    pytest.param("a }} b", "a }} b", id="closing-braces-in-text"),
    pytest.param('{{ "a}}b" }}', "a}}b", id="braces-in-string"),
    pytest.param("{{ `raw \\n` }}", "raw \\n", id="raw-string"),
    pytest.param('{{ "tab\\tq\\"" }}', 'tab\tq"', id="escapes"),
    pytest.param("{{ 42 }} {{ true }}", "42 true", id="literals"),
])
def test_model_functions_and_literals(template: str, expected: str) -> None:
    assert render(template, model()) == expected


@pytest.mark.parametrize(("template", "expected"), [
    pytest.param("a  {{- name }}", "apodinfo", id="left-trim"),
    pytest.param("{{ name -}} \n\t b", "podinfob", id="right-trim"),
    pytest.param("x\n  {{- name -}}\n  y", "xpodinfoy", id="both"),
    pytest.param("a {{/* comment */}}b", "a b", id="comment"),
    pytest.param("a \n{{- /* comment */ -}}\n b", "ab", id="trimmed-comment"),
    pytest.param("{{-3}}", "-3", id="negative-number-is-not-a-trim"),
])
def test_whitespace_trimming_and_comments(template: str, expected: str) -> None:
    assert render(template, model()) == expected


def test_variables_printf_and_pipelines() -> None:
    template = (
        '{{- $route := printf "kube(ew)?_%s__%s_canary__.*__%s_canary(_[0-9]+)?"'
        " namespace ingress service }}\n"
        'rate(x{route=~"{{ $route }}"}[{{ interval }}])'
    )
    assert render(template, model()) == (  # the newline after "}}" stays: no right trim
        '\nrate(x{route=~"kube(ew)?_test__podinfo-ing_canary__.*__podinfo-svc_canary(_[0-9]+)?"}'
        "[1m])"
    )
    assert render('{{ $x := name }}{{ $x = "other" }}{{ $x }}', model()) == "other"
    assert render('{{ name | printf "%s-canary" }}', model()) == "podinfo-canary"
    assert render('{{ printf "%d%% %v %q" 5 interval name }}', model()) == '5% 1m "podinfo"'
    assert render('{{ print name 1 2 }}', model()) == "podinfo1 2"  # Go's Sprint spacing
    assert render("{{ len name }}", model()) == "7"


@pytest.mark.parametrize(("template", "message"), [
    pytest.param("x {{ targt }}", 'line 1, column 3: function "targt" not defined (in {{ targt }})',
                 id="unknown-function"),
    pytest.param("{{ variables.nope }}", 'variables has no entry for key "nope"',
                 id="missing-key-field"),
    pytest.param('{{ index variables "nope" }}', 'index: map has no entry for key "nope"',
                 id="missing-key-index"),
    pytest.param("{{ $route }}", 'undefined variable "$route"', id="undefined-variable"),
    pytest.param("{{ $x = 1 }}", 'undefined variable "$x"', id="assign-undeclared"),
    pytest.param("{{ .Release.Name }}", 'nil data; no entry for key "Release"', id="helm-style"),
    pytest.param("{{ name 1 }}", "wrong number of args for name: want 0 got 1",
                 id="args-to-niladic"),
    pytest.param('{{ printf "%s %s" name }}', "missing argument for %s", id="printf-missing"),
    pytest.param('{{ printf "%s" name target }}', "1 extra argument(s)", id="printf-extra"),
    pytest.param("{{ name.first }}", "can't evaluate field first in type string",
                 id="field-of-string"),
    pytest.param('{{ "x" name }}', "can't give argument to non-function x",
                 id="literal-with-args"),
    pytest.param("{{ if name }}x{{ end }}", "{{ if }} is not supported in metric queries",
                 id="control-structures"),
    pytest.param("a {{ name", "line 1, column 3: unclosed action", id="unclosed-action"),
    pytest.param("{{ }}", "missing value for command", id="empty-action"),
    pytest.param('{{ "abc }}', "unterminated quoted string", id="unterminated-string"),
    pytest.param("{{/* x }}", "unclosed comment", id="unclosed-comment"),
    pytest.param("line\n  {{ nope }}", 'line 2, column 3: function "nope" not defined',
                 id="position-on-later-line"),
])
def test_errors_name_what_and_where(template: str, message: str) -> None:
    with pytest.raises(TemplatingError) as caught:
        render(template, model())
    assert message in str(caught.value)


def test_parse_is_cached_and_pure() -> None:
    template = 'sum(x{ns="{{ namespace }}"}[{{ interval }}])'
    assert parse(template) is parse(template)
    assert render(template, model()) == 'sum(x{ns="test"}[1m])'
    assert render(template, model(namespace="prod", interval="30s")) == 'sum(x{ns="prod"}[30s])'


def test_a_flagger_docs_template_renders() -> None:
    # The MetricTemplate from Flagger's Istio tutorial, as users copy it (multi-line YAML).
    query = """
    100 - sum(
        rate(
            istio_requests_total{
              reporter="{{ variables.reporter }}",
              destination_workload_namespace="{{ namespace }}",
              destination_workload="{{ target }}",
              response_code!="404"
            }[{{ interval }}]
        )
    )
    """
    rendered = render(query, model())
    assert 'reporter="source"' in rendered
    assert 'destination_workload_namespace="test"' in rendered
    assert 'destination_workload="podinfo-deploy"' in rendered
    assert "}[1m]" in rendered


_DOUBLING = '{{ $x := "0123456789abcdef" }}' + '{{ $x = printf "%s%s" $x $x }}' * 40 + "{{ $x }}"


@pytest.mark.parametrize(("template", "message"), [
    pytest.param("{{" + "(" * 3000 + "name" + ")" * 3000 + "}}",
                 "max expression depth exceeded", id="deep-parentheses"),
    pytest.param("{{" + "(" * (MAX_EXPRESSION_DEPTH + 1) + "name"
                 + ")" * (MAX_EXPRESSION_DEPTH + 1) + "}}",
                 "max expression depth exceeded", id="one-past-the-depth"),
    pytest.param('{{ printf "%999999999s" name }}', "width or precision above 1000000",
                 id="huge-width"),
    pytest.param('{{ printf "%.999999999f" 1.5 }}', "width or precision above 1000000",
                 id="huge-precision"),
    pytest.param(_DOUBLING, f"value longer than {MAX_RENDERED} characters",
                 id="doubling-a-variable"),
    pytest.param('{{ printf "' + "%1000000s" * 2 + '" name target }}',
                 f"value longer than {MAX_RENDERED} characters", id="many-wide-verbs"),
    pytest.param('{{ $x := printf "%1000000s" name }}{{ print $x $x }}',
                 f"value longer than {MAX_RENDERED} characters", id="print-of-big-values"),
    pytest.param('{{ printf "%1000000s" name }}{{ printf "%1000000s" name }}',
                 f"rendered query longer than {MAX_RENDERED} characters", id="long-output"),
    pytest.param("x" * (MAX_RENDERED + 1), f"query template longer than {MAX_RENDERED}",
                 id="huge-template"),
])
def test_rendering_is_bounded(template: str, message: str) -> None:
    # A MetricTemplate is user input rendered inside the controller: no recursion error,
    # no gigabyte string, and a message short enough for an Event.
    with pytest.raises(TemplatingError) as caught:
        render(template, model())
    assert message in str(caught.value)
    assert len(str(caught.value)) < 600


def test_the_bounds_leave_real_queries_alone() -> None:
    nested = "{{" + "(" * MAX_EXPRESSION_DEPTH + "name" + ")" * MAX_EXPRESSION_DEPTH + "}}"
    assert render(nested, model()) == "podinfo"
    assert render('{{ printf "%1000000s" name }}', model()) == "podinfo".rjust(1_000_000)
