"""How an answer becomes a value, without a server: the provider's whole contract with the API."""

from __future__ import annotations

from typing import Any

import pytest
from flaggerpy_jsonhttp import read_value

from flaggerpy import sdk


@pytest.mark.parametrize(("answer", "value"), [
    pytest.param(1.5, 1.5, id="number"),
    pytest.param(0, 0.0, id="zero"),
    pytest.param({"value": 99}, 99.0, id="object"),
    pytest.param([0.25], 0.25, id="one-series"),
    pytest.param({"value": "12.5"}, 12.5, id="numeric-string"),
])
def test_a_number_is_the_value(answer: Any, value: float) -> None:
    assert read_value(answer) == value


@pytest.mark.parametrize("answer", [
    pytest.param(None, id="null"),
    pytest.param({"value": None}, id="null-value"),
    pytest.param({}, id="no-value"),
    pytest.param([], id="no-series"),
    pytest.param("NaN", id="nan"),
])
def test_nothing_is_no_values(answer: Any) -> None:
    with pytest.raises(sdk.NoValuesFoundError):
        read_value(answer)


def test_several_series_are_refused() -> None:
    with pytest.raises(sdk.MultipleValuesError, match="returned 2 values"):
        read_value([1, 2])


@pytest.mark.parametrize("answer", [
    pytest.param(True, id="bool"), pytest.param("fast", id="word"),
    pytest.param({"value": {"p99": 1}}, id="nested"),
])
def test_anything_else_is_a_metrics_error(answer: Any) -> None:
    with pytest.raises(sdk.MetricsError) as caught:
        read_value(answer)
    assert type(caught.value) is sdk.MetricsError
