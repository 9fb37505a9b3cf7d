"""The CLI's huge-page re-exec: which environments change, and that a real process restarts."""

import os
import subprocess
import sys

import pytest

from m3jax.run.hugepages import env_with_hugepages, glibc_version


def test_adds_the_tunable_to_an_empty_environment():
  assert env_with_hugepages({"HOME": "/h"}) == {
    "HOME": "/h",
    "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1",
  }


def test_keeps_other_tunables():
  env = env_with_hugepages({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
  assert env == {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"}


@pytest.mark.parametrize(
  "env",
  [
    {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"},  # the user's own value wins
    {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"},
    {"M3JAX_HUGEPAGES": "0"},
  ],
)
def test_leaves_alone_what_is_set_or_opted_out(env):
  assert env_with_hugepages(env) is None


def test_does_not_mistake_a_longer_name_for_the_tunable():
  env = env_with_hugepages({"GLIBC_TUNABLES": "glibc.malloc.hugetlb_extra=1"})
  assert env is not None and env["GLIBC_TUNABLES"].endswith(":glibc.malloc.hugetlb=1")


@pytest.mark.skipif(glibc_version() is None, reason="glibc Linux only")
def test_a_process_restarts_once_with_the_tunable_and_its_arguments():
  code = (
    "import os, sys\n"
    "print('start', os.getpid(), flush=True)\n"
    "from m3jax.run.hugepages import reexec_with_hugepages\n"
    "reexec_with_hugepages()\n"
    "print(os.environ['GLIBC_TUNABLES'], sys.argv[1:], os.getpid())\n"
  )
  env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "M3JAX_HUGEPAGES")}
  p = subprocess.run(
    [sys.executable, "-c", code, "a", "--b=c"], env=env, capture_output=True, text=True
  )
  assert p.returncode == 0, p.stderr
  lines = p.stdout.splitlines()
  # Started twice in one process id (execve), the second time with the tunable, then ran on
  # once with the same arguments.
  assert len(lines) == 3 and lines[0] == lines[1] and lines[0].startswith("start "), lines
  pid = lines[0].split()[1]
  assert lines[2] == f"glibc.malloc.hugetlb=1 ['a', '--b=c'] {pid}"
