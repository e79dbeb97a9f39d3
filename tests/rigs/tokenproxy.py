"""A token-checking nginx in front of a `chroma run` server: how a Chroma 1.x server is secured.

Chroma 1.x checks no credentials itself (its docs put a proxy in front: Envoy, nginx); this rig is that
deployment on loopback, with Debian's nginx (`nginx-light`, installed by .ci/run). Requests without the
expected `Authorization: Bearer TOKEN` (or `X-Chroma-Token: TOKEN`) header get 401.
"""

from __future__ import annotations

import getpass
import shutil
import subprocess
from pathlib import Path

from tests.rigs.servers import ServerProcess, free_port, wait_http

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

_CONFIG = """
worker_processes 1;
daemon off;
user {user};
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    client_max_body_size 0;
    map $http_{variable} $kb_token_ok {{
        "{expected}" 1;
        default 0;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            if ($kb_token_ok = 0) {{ return 401; }}
            proxy_pass {upstream};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_read_timeout 600s;
        }}
    }}
}}
"""


class TokenProxy(ServerProcess):
    """nginx on a free loopback port, passing to `upstream` only requests that carry `token`."""

    def __init__(self, upstream: str, token: str, work: Path, header: str = "Authorization") -> None:
        work.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        variable = header.lower().replace("-", "_")
        expected = f"Bearer {token}" if header == "Authorization" else token
        config = work / "nginx.conf"
        # Workers keep our user (as root, nginx would switch to nobody, who cannot write its temp folders).
        config.write_text(_CONFIG.format(user=getpass.getuser(), work=work, variable=variable, expected=expected,
                                         port=self.port, upstream=upstream))
        self._log = open(work / "nginx.log", "w")
        self.process = subprocess.Popen([NGINX, "-p", str(work), "-c", str(config)], stdout=self._log,
                                        stderr=subprocess.STDOUT)
        try:
            # 401 is "up" here: wait_http accepts any answer under 500.
            wait_http(f"{self.url}/api/v2/heartbeat", self.process, log=work / "error.log")
        except BaseException:
            self.close()
            raise
