"""The microvm backend builds and runs the compiled languages when its image carries the toolchains
(configs/image-languages.yaml): a compiler run with ``ExecRequest.command``, its output fetched back,
the program run on stdin; a native memory bomb under ``memory_mode="resident"``.

Runs under TCG on machines without a working KVM (ours): each compiler takes 5 to 60 s there, so
every language is one small program, built and run on a pool of two guests at once. ``make test``
builds the image beforehand (``harness image build --config configs/image-languages.yaml``); the
fixture finds it cached, or builds it (about a minute) when it is missing.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from vmpool import ExecRequest, Limits, MicroVMTemplate, Pool, PoolConfig, Status, build_image, load_image_config

pytestmark = [pytest.mark.microvm, pytest.mark.slow]

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "image-languages.yaml"
# Builds: generous, TCG runs a compiler 20-80x slower than natively and the host may be busy.
BUILD = Limits(wall_s=600.0, cpu_s=400.0, memory_mb=2048, memory_mode="resident", max_processes=64,
               output_bytes=32 << 20, file_size_bytes=256 << 20)
NATIVE = Limits(wall_s=60.0, cpu_s=30.0)
MANAGED = Limits(wall_s=180.0, cpu_s=120.0, memory_mb=448, memory_mode="resident", max_processes=64)
GO_ENV = {"GO111MODULE": "off", "GOPATH": "/tmp/go:/usr/share/gocode", "GOCACHE": "/tmp/.cache/go-build",
          "CGO_ENABLED": "0", "GOFLAGS": "-buildvcs=false"}  # as rewards builds Go (rewards/_languages.py)


@dataclass(frozen=True)
class Program:
    """One language's program: reads two integers, prints their sum."""

    source_name: str
    source: str
    build: tuple[str, ...]  # empty: run the source itself
    artifact: str
    run: tuple[str, ...]
    limits: Limits = NATIVE
    env: dict[str, str] = field(default_factory=dict)


PROGRAMS = {
    "cpp": Program("main.cpp", "#include <iostream>\nint main() { long a, b; std::cin >> a >> b; "
                   "std::cout << a + b << '\\n'; }\n",
                   ("g++", "-std=gnu++17", "-O2", "-pipe", "-o", "prog", "main.cpp"), "prog", ("./prog",)),
    "c": Program("main.c", "#include <stdio.h>\nint main(void) { long a, b; if (scanf(\"%ld %ld\", &a, &b) != 2) "
                 "return 3; printf(\"%ld\\n\", a + b); return 0; }\n",
                 ("gcc", "-std=gnu17", "-O2", "-pipe", "-o", "prog", "main.c", "-lm"), "prog", ("./prog",)),
    "java": Program("Main.java", "import java.util.Scanner;\npublic class Main { public static void main(String[] a) "
                    "{ Scanner s = new Scanner(System.in); System.out.println(s.nextLong() + s.nextLong()); } }\n",
                    ("javac", "-encoding", "UTF-8", "-d", ".", "Main.java"), "Main.class",
                    ("java", "-Xmx256m", "-XX:+UseSerialGC", "-XX:CICompilerCount=2", "-XX:-UsePerfData",
                     "-cp", ".", "Main"), MANAGED),
    "javascript": Program("main.js", "const [a, b] = require('fs').readFileSync(0, 'utf8').trim().split(/\\s+/)"
                          ".map(Number);\nconsole.log(a + b);\n",
                          ("node", "--check", "main.js"), "", ("node", "--max-old-space-size=256", "main.js"),
                          MANAGED),
    "go": Program("main.go", "package main\n\nimport \"fmt\"\n\nfunc main() { var a, b int64; fmt.Scan(&a, &b); "
                  "fmt.Println(a + b) }\n", ("go", "build", "-o", "prog", "main.go"), "prog", ("./prog",),
                  Limits(wall_s=60.0, cpu_s=30.0, memory_mb=256, memory_mode="resident", max_processes=64), GO_ENV),
    "rust": Program("main.rs", "use std::io::Read;\nfn main() { let mut s = String::new(); "
                    "std::io::stdin().read_to_string(&mut s).unwrap(); let v: Vec<i64> = "
                    "s.split_whitespace().map(|x| x.parse().unwrap()).collect(); println!(\"{}\", v[0] + v[1]); }\n",
                    ("rustc", "--edition=2021", "-O", "-C", "strip=debuginfo", "-o", "prog", "main.rs"), "prog",
                    ("./prog",)),
    "bash": Program("main.sh", "read -r a b\necho $((a + b))\n", ("bash", "-n", "main.sh"), "",
                    ("bash", "main.sh")),
}


@pytest.fixture(scope="module")
def languages_image():
    """The languages image: cached (``make test`` builds it), else built here."""
    config = load_image_config(CONFIG)
    return config, build_image(config)


@pytest.fixture(scope="module")
def lang_pool(languages_image):
    config, image = languages_image
    template = MicroVMTemplate.ensure(config, image=image, boot_timeout_s=600.0)
    with Pool(PoolConfig(backend="microvm", image_config=str(CONFIG), size=2, start_timeout_s=120.0),
              template=template) as pool:
        yield pool


def _last_file(cpio: Path) -> str:
    """The last regular file packed into a newc cpio archive (what unpacks last)."""
    last = ""
    with open(cpio, "rb") as fh:
        while (head := fh.read(110))[:6] == b"070701":
            mode, size, namesize = int(head[14:22], 16), int(head[54:62], 16), int(head[94:102], 16)
            name = fh.read(namesize)[:-1].decode()
            if stat.S_ISREG(mode):
                last = name
            fh.seek((-(110 + namesize)) % 4 + size + (-size) % 4, 1)
    return last


def test_the_whole_image_is_unpacked_and_the_toolchains_are_on_path(languages_image, lang_pool) -> None:
    # An image larger than its guest memory allows still boots, with its last files missing.
    last = _last_file(languages_image[1].initramfs)
    tools = "cc c++ gcc g++ java javac node go rustc bash"
    script = f"test -f /{last} && for t in {tools}; do command -v $t || exit 1; done"
    res = lang_pool.run(ExecRequest(code="", command=["/bin/sh", "-c", script], limits=NATIVE))
    assert res.status is Status.OK, (last, res.stdout, res.stderr)
    assert len(res.stdout.split()) == len(tools.split()), res.stdout


def test_every_language_compiles_and_runs_on_stdin(lang_pool) -> None:
    names = list(PROGRAMS)
    builds = lang_pool.map([
        ExecRequest(code="", command=list(p.build), files={p.source_name: p.source}, env=p.env,
                    fetch_files=[p.artifact] if p.artifact else [], limits=BUILD)
        for p in PROGRAMS.values()])  # fmt: skip
    for name, built in zip(names, builds):
        program = PROGRAMS[name]
        assert built.status is Status.OK, (name, built.status, built.stderr[-2000:])
        assert not program.artifact or program.artifact in built.files, (name, built.files.keys())
    runs = []
    for name, built in zip(names, builds):
        program = PROGRAMS[name]
        files = {program.artifact: built.files[program.artifact]} if program.artifact else {
            program.source_name: program.source}
        runs.append(ExecRequest(code="", command=list(program.run), files=files, stdin="2 40\n", env=program.env,
                                executable=[program.artifact] if program.artifact == "prog" else [],
                                limits=program.limits))
    results = lang_pool.map(runs)
    outcomes = {name: (r.status, r.stdout, r.stderr[-500:]) for name, r in zip(names, results)}
    assert all(o[:2] == (Status.OK, "42\n") for o in outcomes.values()), outcomes
    timings = {name: f"build {b.wall_s:.1f} s + run {r.wall_s:.1f} s" for name, b, r in zip(names, builds, results)}
    print("\nmicrovm languages (guest wall time):", timings)


def test_a_cpp_memory_bomb_ends_as_memory_limit_in_resident_mode(lang_pool) -> None:
    bomb = ("#include <cstring>\n#include <unistd.h>\n#include <vector>\nint main() { fork(); "
            "std::vector<char*> kept; for (;;) { char *p = new char[8 << 20]; std::memset(p, 1, 8 << 20); "
            "kept.push_back(p); } }\n")
    built = lang_pool.run(ExecRequest(code="", command=["g++", "-O1", "-o", "prog", "bomb.cpp"],
                                      files={"bomb.cpp": bomb}, fetch_files=["prog"], limits=BUILD))
    assert built.status is Status.OK and "prog" in built.files, built.stderr[-2000:]
    limits = Limits(wall_s=60.0, cpu_s=30.0, memory_mb=128, memory_mode="resident")
    res = lang_pool.run(ExecRequest(code="", command=["./prog"], files={"prog": built.files["prog"]},
                                    executable=["prog"], limits=limits))
    assert res.status is Status.MEMORY_LIMIT, (res.status, res.stderr[-500:])
    after = lang_pool.run(ExecRequest(code="print('next')", limits=NATIVE))
    assert after.status is Status.OK and after.stdout == "next\n"  # the guest goes on serving
