"""MKL's AVX2 path is chosen only on AMD x86-64 CPUs with AVX2 + FMA, never over the
user's own setting, and importing the package applies it before MKL runs."""

import os
import subprocess
import sys

import pytest

from paddleseg_ext.utils import mkl_dispatch as M

AMD = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx fma avx2 bmi2\n\n" \
      "processor\t: 1\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx fma avx2 bmi2\n"
INTEL = AMD.replace("AuthenticAMD", "GenuineIntel")
OLD_AMD = AMD.replace(" fma avx2", "")


@pytest.mark.parametrize("cpuinfo, machine, expected", [
    (AMD, "x86_64", True),
    (AMD, "AMD64", True),
    (INTEL, "x86_64", False),    # Intel already gets MKL's best path (maybe AVX-512)
    (OLD_AMD, "x86_64", False),  # no AVX2 kernels to run
    (AMD, "aarch64", False),
    ("", "x86_64", False),       # no /proc/cpuinfo
])
def test_wants_avx2_path(cpuinfo, machine, expected):
    assert M.wants_avx2_path(cpuinfo, machine) is expected


def test_apply_sets_the_variable_on_amd_only():
    env = {}
    assert M.apply(env, AMD, "x86_64") and env == {M.ENV: "5"}
    env = {}
    assert not M.apply(env, INTEL, "x86_64") and env == {}


def test_apply_never_overrides_the_user_and_can_be_turned_off():
    env = {M.ENV: "2"}
    assert not M.apply(env, AMD, "x86_64") and env[M.ENV] == "2"
    for off in ("0", "false", "OFF"):
        env = {M.OPT_OUT: off}
        assert not M.apply(env, AMD, "x86_64") and M.ENV not in env
    env = {M.OPT_OUT: "1"}
    assert M.apply(env, AMD, "x86_64") and env[M.ENV] == "5"


def test_plain_environment_drops_only_what_apply_set(monkeypatch):
    monkeypatch.setattr(M, "applied", True)
    assert M.ENV not in M.plain_environment({M.ENV: "5", "A": "1"})
    monkeypatch.setattr(M, "applied", False)
    assert M.plain_environment({M.ENV: "5"}) == {M.ENV: "5"}  # the user's own setting stays


def _import_in_child(extra_env):
    env = {k: v for k, v in os.environ.items() if k not in (M.ENV, M.OPT_OUT)}
    env.update(extra_env)
    code = ("import os, paddleseg_ext; from paddleseg_ext.utils import mkl_dispatch as m; "
            "print(os.environ.get(m.ENV), m.applied, m.wants_avx2_path(m._cpuinfo()))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout.split()
    return out[0], out[1] == "True", out[2] == "True"


def test_importing_the_package_applies_it_here():
    value, applied, wanted = _import_in_child({})
    assert applied is wanted
    assert value == ("5" if wanted else "None")
    # the user's setting and the opt-out both win
    assert _import_in_child({M.ENV: "4"})[:2] == ("4", False)
    assert _import_in_child({M.OPT_OUT: "0"})[:2] == ("None", False)
