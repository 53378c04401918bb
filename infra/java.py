"""Find a Java 17+ runtime and Maven, with errors that say what to install."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from infra.errors import StackError

MIN_JAVA = 17


def java_binary() -> str:
    """$JAVA_HOME/bin/java when set, else ``java`` on PATH."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if not found:
        raise StackError(
            f"Java {MIN_JAVA}+ is needed to run the local Kafka broker and none was found: "
            "install it (Debian: apt-get install -y openjdk-17-jre-headless, or "
            "default-jre-headless where 17 is not packaged) "
            "or set STREAMREC_KAFKA_BOOTSTRAP to an existing cluster"
        )
    return found


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
    java = java_binary()
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    major = parse_java_major(out.stderr + out.stdout)
    if major is None or major < MIN_JAVA:
        raise StackError(
            f"Java {MIN_JAVA}+ is needed to run Kafka; {java} reports "
            f"{(out.stderr or out.stdout).splitlines()[0] if (out.stderr or out.stdout) else 'nothing'}"
        )
    return java


def maven_binary() -> str:
    found = shutil.which("mvn")
    if not found:
        raise StackError(
            "Maven is needed once to fetch the Kafka jars and none was found: "
            "install it (Debian: apt-get install -y maven)"
        )
    return found
