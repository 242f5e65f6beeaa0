"""A real nginx for the labs: its own config, pid, logs and temp folders, on loopback, never the system's.

``Nginx(ctx, "proxy")`` lays out ``ctx.dir/proxy/`` (``nginx.conf``, ``conf.d/``,
``logs/``, ``tmp/``); :meth:`Nginx.write` writes ``nginx.conf`` around the
``http {}`` body a lab gives; :meth:`Nginx.start` runs ``nginx -g 'daemon off;'``
as a lab process and waits until it answers. The commands a runbook needs to
test and reload that exact instance are :attr:`Nginx.test_command` and
:attr:`Nginx.reload_command` (``-e`` keeps nginx from opening
``/var/log/nginx/error.log`` before it reads the config, which fails unprivileged).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from engine.lab.base import LOOPBACK, LabContext, LabError

TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def nginx_binary() -> str:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if not found:
        raise LabError(
            "nginx is not installed: apt-get install nginx (the lab runs its own instance, not the system's)"
        )
    return found


class Nginx:
    """One nginx instance of a lab."""

    def __init__(self, ctx: LabContext, name: str = "nginx") -> None:
        self.ctx = ctx
        self.name = name
        self.binary = nginx_binary()
        self.root = ctx.dir / name
        self.conf = self.root / "nginx.conf"
        self.conf_d = self.root / "conf.d"
        self.logs = self.root / "logs"
        self.error_log = self.logs / "error.log"
        self.access_log = self.logs / "access.log"
        self.pid_file = self.root / "nginx.pid"
        for folder in (self.conf_d, self.logs, *(self.root / "tmp" / t for t in TEMP_PATHS)):
            folder.mkdir(parents=True, exist_ok=True)
        # As root nginx's workers run as nobody: they must reach the temp folders.
        if os.geteuid() == 0:
            for folder in (
                self.ctx.dir,
                self.root,
                self.root / "tmp",
                *(self.root / "tmp" / t for t in TEMP_PATHS),
            ):
                folder.chmod(0o755)

    @property
    def base_command(self) -> list[str]:
        return [self.binary, "-c", str(self.conf), "-e", str(self.error_log)]

    @property
    def test_command(self) -> list[str]:
        return [*self.base_command, "-t", "-q"]

    @property
    def reload_command(self) -> list[str]:
        return [*self.base_command, "-s", "reload"]

    def write(self, http_body: str, *, log_format: str = "") -> Path:
        """Write ``nginx.conf``: one worker, own paths, ``include conf.d/*.conf`` and ``http_body`` inside ``http {}``."""
        temp = "\n".join(f"    {t}_temp_path {self.root / 'tmp' / t};" for t in TEMP_PATHS)
        fmt = f"    log_format lab '{log_format}';\n" if log_format else ""
        access = f"    access_log {self.access_log}{' lab' if log_format else ''};"
        self.conf.write_text(
            f"""# Written by the Cairn lab ({self.ctx.name}); nginx -c {self.conf}
worker_processes 1;
pid {self.pid_file};
error_log {self.error_log} notice;
events {{ worker_connections 256; }}
http {{
{temp}
{fmt}{access}
    include {self.conf_d}/*.conf;
{http_body}
}}
""",
            encoding="utf-8",
        )
        return self.conf

    def check(self) -> None:
        """``nginx -t`` on the config, or a LabError with nginx's words."""
        done = subprocess.run(self.test_command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise LabError(f"lab {self.ctx.name}: nginx -t failed: {done.stderr.strip()}")

    def start(self, port: int, address: str = LOOPBACK) -> int:
        """Start this nginx in the foreground as a lab process; returns once ``address:port`` answers."""
        self.check()
        pid = self.ctx.spawn([*self.base_command, "-g", "daemon off;"], name=self.name)
        self.ctx.wait_for_port(port, address=address, process=self.name)
        return pid

    def reload(self) -> None:
        done = subprocess.run(self.reload_command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise LabError(f"lab {self.ctx.name}: nginx reload failed: {done.stderr.strip()}")


def nginx_available() -> bool:
    try:
        nginx_binary()
    except LabError:
        return False
    return True
