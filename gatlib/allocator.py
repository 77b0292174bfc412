"""Which ``malloc`` a notebook kernel runs with: jemalloc when the machine has it, else the system's.

Why it matters: a chapter attacks batch after batch of latents, and every batch allocates and frees
hundreds of activation tensors of slightly different sizes. glibc's allocator keeps the freed pieces
scattered over its heap, so a kernel's resident memory creeps up batch after batch; jemalloc's size
classes reuse them. On our 2-core CPU chapter 02 peaked at 4.05 GiB with glibc (the book's budget is 4)
and at 2.78 GiB with jemalloc, 22 % faster, with bit-identical numbers (an allocator does not change
what is computed). ``python -m benchmarks --only allocator`` measures both on one attack workload.

jemalloc runs without decay (``JEMALLOC_CONF``): freed pages stay with the process. That is what makes
it fast here, and it can cost memory where a chapter's allocations change size from phase to phase:
chapter 07 (SPADE attacks and predictions at 64 px) peaked at 4.21 GiB with it against 2.08 GiB with
glibc. Such a chapter keeps the system's malloc by saying so in its front matter
(``gat: allocator: system``); the caller's ``GAT_ALLOCATOR`` still wins.

jemalloc is not a Python package: it is Debian's ``libjemalloc2`` (``.ci/run`` installs it), conda's
``jemalloc``, or any ``libjemalloc.so.2`` the machine has. It can only be chosen when a process
starts, so the runner puts it in ``LD_PRELOAD`` for the kernel it launches (``kernel_env``) and the
kernel records what it actually got (``loaded``) in its run stamp.

``GAT_ALLOCATOR`` chooses: unset (the chapter's front matter, else ``auto``), ``auto`` (jemalloc if
found, else the system's), ``system``, or the path of a ``libjemalloc.so*`` to preload.
"""
from __future__ import annotations

import glob
import os
import sys
from pathlib import Path

ALLOCATOR_ENV = "GAT_ALLOCATOR"
# freed pages stay with the process for reuse instead of being handed back to the OS after a delay.
# jemalloc's default decay returns them and faults them in again between attack steps: on the
# allocator benchmark's attack workload it holds a lower peak (0.68 of glibc's against 0.79) but takes
# 1.39 of glibc's time against 0.65 without decay (benchmarks/results.json, `allocator` rows)
JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"
JEMALLOC_PATTERNS = (
    "{prefix}/lib/libjemalloc.so.2",             # conda / a venv's own prefix
    "/usr/lib/*-linux-gnu/libjemalloc.so.2",      # Debian / Ubuntu multiarch
    "/usr/lib64/libjemalloc.so.2",                # Fedora / RHEL
    "/usr/lib/libjemalloc.so.2",
    "/usr/local/lib/libjemalloc.so.2",
)


def _is_jemalloc(path) -> bool:
    return Path(path).name.startswith("libjemalloc.so")


def find_jemalloc() -> Path | None:
    """The first ``libjemalloc.so.2`` on this machine (None when there is none or not on Linux)."""
    if not sys.platform.startswith("linux"):
        return None     # LD_PRELOAD is Linux's; macOS and Windows keep their own allocator
    prefixes = dict.fromkeys([sys.prefix, sys.base_prefix, os.environ.get("CONDA_PREFIX") or sys.prefix])
    for pattern in JEMALLOC_PATTERNS:
        for prefix in prefixes:
            for found in sorted(glob.glob(pattern.format(prefix=prefix))):
                if os.path.isfile(found):
                    return Path(found)
    return None


def choose(choice: str | None = None) -> Path | None:
    """The library to preload for ``choice`` (default: ``$GAT_ALLOCATOR``); None means the system's.

    Raises ValueError naming the problem for an unknown choice or a path that is not a jemalloc library."""
    choice = os.environ.get(ALLOCATOR_ENV, "auto") if choice is None else choice
    choice = choice.strip()
    if choice in ("", "auto"):
        return find_jemalloc()
    if choice == "system":
        return None
    path = Path(choice).expanduser()
    if not _is_jemalloc(path):
        raise ValueError(f"{ALLOCATOR_ENV}={choice!r} is not 'auto', 'system' or the path of a libjemalloc.so* library")
    if not path.is_file():
        raise ValueError(f"{ALLOCATOR_ENV}={choice!r}: no such file")
    return path.resolve()


def kernel_env(choice: str | None = None, environ: dict | None = None) -> dict[str, str | None]:
    """The environment variables a child process needs to start with the chosen allocator
    (a value of None: unset it).

    Keeps whatever else is in ``LD_PRELOAD`` (after our library) and a ``MALLOC_CONF`` the user set;
    for the system's allocator it takes a jemalloc the caller preloaded out of ``LD_PRELOAD``."""
    environ = os.environ if environ is None else environ
    library = choose(choice)
    preloaded = [p for p in environ.get("LD_PRELOAD", "").replace(":", " ").split() if p]
    others = [p for p in preloaded if not _is_jemalloc(p)]
    if library is None:
        return {} if others == preloaded else {"LD_PRELOAD": " ".join(others) or None}
    return {"LD_PRELOAD": " ".join([str(library)] + others),
            "MALLOC_CONF": environ.get("MALLOC_CONF") or JEMALLOC_CONF}


def loaded() -> str:
    """The allocator this process runs with: ``"jemalloc"`` when a libjemalloc is mapped, else ``"system"``."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "system"
    return "jemalloc" if "libjemalloc" in maps else "system"
