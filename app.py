"""``python app.py``: serve the FLRDF Studio dashboard (see dashboard/app.py).

With no arguments it runs offline on the bundled demo model (assets/), on 127.0.0.1 without a login.
Serving beyond loopback (``--host 0.0.0.0``, ``--share``) needs ``--auth-file``/``--auth`` or an explicit
``--no-auth``; the decision is ``flrdf.auth.serving_check``, made before the dashboard is imported
or anything is bound.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="FLRDF Studio dashboard")
    parser.add_argument("--checkpoint", default=None,
                        help="checkpoint .pt, model .safetensors or run directory "
                             "(default: assets/demo_model.safetensors)")
    parser.add_argument("--runs-dir", default="runs", help="folder whose run directories are offered (default: runs)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    parser.add_argument("--share", action="store_true", help="also open a public Gradio share link (needs a login)")
    parser.add_argument("--auth", action="append", default=[], metavar="USER:PASSWORD",
                        help="a login (an editor unless --read-only); repeatable. The password shows in the "
                             "process list: prefer --auth-file on a shared machine")
    parser.add_argument("--auth-file", default=None, metavar="FILE",
                        help="logins, one user:hash[:role] per line (role editor or viewer); write lines with "
                             "'python -m flrdf hash-password --user NAME [--role viewer]'")
    parser.add_argument("--no-auth", action="store_true",
                        help="serve beyond 127.0.0.1 (--host, --share) without a login, on purpose")
    parser.add_argument("--read-only", action="store_true",
                        help="everyone is a viewer: no launching, stopping, resuming or evaluating")
    parser.add_argument("--allow-dir", dest="allow_dirs", action="append", default=[], metavar="DIR",
                        help="also let clients name checkpoints under DIR (repeatable); by default only the demo "
                             "model, --checkpoint and files under --runs-dir. See docs/dashboard.md, Security model")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU compute threads (default 0: half the cores, at least 1 - "
                             "robust when training runs beside)")
    parser.add_argument("--max-jobs", type=int, default=1, metavar="N",
                        help="CPU training jobs running at once (default 1); more wait in the queue. GPU jobs wait "
                             "for the GPUs picked for them instead. See docs/dashboard.md, Running it for a lab")
    args = parser.parse_args(argv)
    if args.max_jobs < 1:
        parser.error(f"--max-jobs must be >= 1, got {args.max_jobs}")

    from flrdf.auth import AuthError, load_logins, serving_check

    try:
        logins = load_logins(args.auth, args.auth_file, args.read_only)
    except AuthError as exc:
        print(f"app.py: error: {exc}", file=sys.stderr)
        return 2
    error, warning = serving_check(args.host, args.share, logins.required, args.no_auth)
    if error:
        print(f"app.py: error: {error}", file=sys.stderr)
        return 2
    if warning:
        print(warning, file=sys.stderr)

    from dashboard.app import build_app, launch, set_compute_threads

    set_compute_threads(args.threads)

    try:
        app = build_app(args.checkpoint, args.runs_dir, args.device, allow_dirs=args.allow_dirs,
                        max_jobs=args.max_jobs, logins=logins)
    except (RuntimeError, ValueError) as exc:
        print(f"app.py: error: {exc}", file=sys.stderr)
        return 2
    launch(app, host=args.host, port=args.port, share=args.share)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
