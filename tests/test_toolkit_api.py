"""The toolkit's front door: every public name resolves, is listed by purpose in the package
docstring, and importing the package (or a light module of it) does not load torch."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

import reuse.toolkit as toolkit


def test_every_public_name_resolves_to_its_module_and_is_documented():
    documented = set(re.findall(r":(?:func|data):`(\w+)`", toolkit.__doc__))
    assert documented == set(toolkit.__all__)
    for name in toolkit.__all__:
        value = getattr(toolkit, name)
        assert getattr(value, "__module__", f"reuse.toolkit.{toolkit._API[name]}").startswith("reuse.toolkit.")
        assert name in dir(toolkit)


def test_unknown_names_raise_attribute_error():
    with pytest.raises(AttributeError, match="kernel_rsme"):
        toolkit.kernel_rsme  # noqa: B018


def test_the_front_door_loads_nothing_heavy_until_asked():
    code = ("import sys, reuse.toolkit, reuse.toolkit.files; print('torch' in sys.modules); "
            "reuse.toolkit.kernel_rmse; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "True"]
