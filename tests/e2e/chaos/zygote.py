"""A process that has imported runbook once and forks a fresh `runbook` CLI process per request.

The chaos test starts dozens of ``runbook exec`` / ``resume`` / ``cancel`` processes; paying the
interpreter start and the imports each time would take most of its time budget. Each request is
one JSON line on stdin (``{"args": [...], "env": {...}, "cwd": "...", "out": "file"}``); the
child is a real process (its own pid, killed by SIGKILL for real); the answer is one JSON line
``{"pid": ..., "code": ..., "signal": ...}``. Single-threaded, so forking is safe.
"""

from __future__ import annotations

import json
import os
import sys

import runbook.cli
import runbook.runner


def child(request: dict) -> None:
    os.chdir(request["cwd"])
    os.environ.update(request.get("env", {}))
    out = os.open(request["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(out, 1)
    os.dup2(out, 2)
    sys.path.insert(0, request["cwd"])
    sys.argv = ["runbook", *request["args"]]
    code = 1
    try:
        runbook.cli.cli.main(args=request["args"], prog_name="runbook", standalone_mode=True)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 99
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main() -> None:
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            child(request)
        _, status = os.waitpid(pid, 0)
        answer = {
            "pid": pid,
            "code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
            "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
        }
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
