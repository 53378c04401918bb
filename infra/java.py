"""Find a Java 17+ runtime and Maven, with errors that say what to install."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from infra.errors import StackError

MIN_JAVA = 17


def _candidates() -> list[str]:
    """$JAVA_HOME/bin/java when set, then ``java`` on PATH."""
    home = os.environ.get("JAVA_HOME")
    found = [str(Path(home) / "bin" / "java")] if home and (
        Path(home) / "bin" / "java").exists() else []
    on_path = shutil.which("java")
    return [*found, on_path] if on_path and on_path not in found else found


def parse_java_major(version_output: str) -> int | None:
    """Major version from ``java -version`` output ('1.8.0_x' is 8, '17.0.15' is 17)."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if not match:
        return None
    major = int(match.group(1))
    if major == 1 and match.group(2):
        major = int(match.group(2))
    return major


def check_java() -> str:
    """The Java 17+ to run: $JAVA_HOME's when it is 17+, else PATH's. An older JAVA_HOME
    (GitHub's Ubuntu runners set one to 11) beat a Java 17 on PATH: ``stack up`` refused
    to start, and ``infra/system-deps.sh`` installed 17 again at every ``make``."""
    candidates = _candidates()
    if not candidates:
        raise StackError(
            f"Java {MIN_JAVA}+ is needed to run the local Kafka broker and none was found: "
            "install it (Debian: apt-get install -y openjdk-17-jre-headless, or "
            "default-jre-headless where 17 is not packaged) "
            "or set STREAMREC_KAFKA_BOOTSTRAP to an existing cluster"
        )
    reports = []
    for java in candidates:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
        text = out.stderr or out.stdout
        major = parse_java_major(out.stderr + out.stdout)
        if major is not None and major >= MIN_JAVA:
            return java
        reports.append(f"{java} reports {text.splitlines()[0] if text else 'nothing'}")
    raise StackError(f"Java {MIN_JAVA}+ is needed to run Kafka; {'; '.join(reports)}"
                     + ("; unset JAVA_HOME or point it at 17+"
                        if os.environ.get("JAVA_HOME") else ""))


def maven_binary() -> str:
    found = shutil.which("mvn")
    if not found:
        raise StackError(
            "Maven is needed once to fetch the Kafka jars and none was found: "
            "install it (Debian: apt-get install -y maven)"
        )
    return found
