"""Run client programs against the local server: `make check-clients` runs the generated
TypeScript and Python clients' flows and the browser test of /docs and /redoc this way.

    python tools/check_clients.py 'node clients/build/flow.js' '.venv-clients/bin/python ...'
    python tools/check_clients.py --stage dev 'node clients/build/browser.js'

Each command gets the server's base URL as its last argument (with `--stage`, the server
serves the API under that stage's prefix, as API Gateway does, and the URL ends in it).
The server is `python -m localapi` on a free port with a fresh, migrated SQLite database
in a temporary folder (no developer's `.env` is read there); it stops when the commands
are done.
Screenshots go to SCREENSHOT_DIR (default: a folder in the system's temporary directory).
"""

import os
import secrets
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from localapi.server import ServerStartError, free_port, running

ROOT = Path(__file__).resolve().parent.parent


def main(commands: list[str], *, stage: str | None = None) -> int:
    with tempfile.TemporaryDirectory(prefix="check-clients-") as folder:
        env = {
            **os.environ,
            "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'shared'}",
            "STAGE": "local",
            "DATABASE_URL": f"sqlite:///{folder}/clients.db",
            "JWT_SECRET_KEY": secrets.token_urlsafe(32),
            "BCRYPT_ROUNDS": "4",
            "CORS_ORIGINS": "",
            "LOG_LEVEL": "WARNING",
            # The flows read the mails (reset and email-change links) where the local
            # server writes them with no mail settings: its log.
            "SERVER_LOG": str(Path(folder) / "server.log"),
        }
        for name in ("DATABASE_SECRET_ARN", "JWT_SECRET_ARN", "EMAIL_DELIVERY", "SMTP_SERVER"):
            env.pop(name, None)
        env.setdefault("SCREENSHOT_DIR", str(Path(tempfile.gettempdir()) / "task-api-screenshots"))
        Path(env["SCREENSHOT_DIR"]).mkdir(parents=True, exist_ok=True)
        alembic = [
            sys.executable,
            "-m",
            "alembic",
            "-c",
            str(ROOT / "alembic.ini"),
            "upgrade",
            "head",
        ]
        subprocess.run(alembic, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)  # noqa: S603

        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        log = Path(folder) / "server.log"
        serve = [sys.executable, "-m", "localapi", "--template", str(ROOT / "template.yaml")]
        serve += ["--port", str(port), "--log-level", "warning"]
        if stage:
            serve += ["--stage", stage]
            base_url = f"{base_url}/{stage}"
        try:
            with running(serve, ready_url=f"{base_url}/health", log=log, env=env, cwd=Path(folder)):
                for command in commands:
                    print(f"$ {command} {base_url}", flush=True)
                    argv = [*shlex.split(command), base_url]
                    if subprocess.run(argv, cwd=ROOT, env=env, check=False).returncode:  # noqa: S603
                        print(f"failed: {command}\nserver log:\n{log.read_text()}", file=sys.stderr)
                        return 1
        except ServerStartError as error:
            raise SystemExit(f"the local server: {error}") from None
        print(f"screenshots in {env['SCREENSHOT_DIR']}")
    return 0


if __name__ == "__main__":
    arguments = sys.argv[1:]
    chosen_stage = None
    if arguments[:1] == ["--stage"]:
        chosen_stage, arguments = arguments[1], arguments[2:]
    sys.exit(main(arguments, stage=chosen_stage))
