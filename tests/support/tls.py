"""Throwaway certificates for TLS tests: a CA and a server certificate for localhost, via openssl."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.support.private_node import TlsFiles


def make_server_certificates(directory: Path, common_name: str = "localhost") -> TlsFiles:
    """Write ca.pem, cert.pem (valid for localhost and 127.0.0.1) and key.pem into `directory`."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("openssl not found: it generates the test certificates")
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca = directory / "ca-key.pem", directory / "ca.pem"
    key, csr, cert = directory / "key.pem", directory / "server.csr", directory / "cert.pem"
    extensions = directory / "server.ext"
    extensions.write_text(
        "basicConstraints = CA:FALSE\n"
        "keyUsage = digitalSignature, keyEncipherment\n"
        "extendedKeyUsage = serverAuth\n"
        f"subjectAltName = DNS:{common_name}, IP:127.0.0.1\n"
    )

    def run(*args: str) -> None:
        done = subprocess.run([openssl, *args], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"openssl {args[0]} failed: {done.stderr.strip()}")

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=calc-events test CA",
        "-keyout",
        str(ca_key),
        "-out",
        str(ca),
    )
    run(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        f"/CN={common_name}",
        "-keyout",
        str(key),
        "-out",
        str(csr),
    )
    run(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        str(extensions),
        "-out",
        str(cert),
    )
    return TlsFiles(ca=ca, cert=cert, key=key)
