"""Logins for the dashboard: password hashes, the auth file, roles, and when a login is required.

Standard library only and no UI imports: ``python -m flrdf hash-password`` writes auth-file lines
with it, ``app.py`` decides with it whether it may start, and the dashboard checks logins
(Gradio's ``launch(auth=...)``) and roles (``dashboard.access``) with it.

Auth file (``app.py --auth-file FILE``): one ``user:hash[:role]`` per line, ``#`` comments and
blank lines ignored. ``hash`` is ``pbkdf2_sha256$ITERATIONS$SALT_HEX$HASH_HEX`` or
``scrypt$N$R$P$SALT_HEX$HASH_HEX``, each with its own random salt and its cost recorded in the line;
``role`` is ``editor`` (default: may launch, stop and resume jobs and write results) or ``viewer``.
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import hmac
import ipaddress
import re
import secrets
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

EDITOR, VIEWER = "editor", "viewer"
ROLES = (EDITOR, VIEWER)
PBKDF2 = "pbkdf2_sha256"
SCRYPT = "scrypt"
PBKDF2_ITERATIONS = 600_000          # OWASP's figure for PBKDF2-HMAC-SHA256
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 15, 8, 3   # one of OWASP's equivalent scrypt settings (32 MiB)
SCRYPT_MAX_BYTES = 1 << 28           # a line asking scrypt for more memory than this is refused
SALT_BYTES, HASH_BYTES = 16, 32
USER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")
USER_RULE = "a user name is 1-64 letters, digits or ._@+- (starting with a letter or digit)"
LOOPBACK_NAMES = ("localhost",)


class AuthError(ValueError):
    """A login, an auth file or a serving choice that cannot be used; the message says what to fix."""


# ---------------------------------------------------------------- hashes
def hash_password(password: str, scheme: str = PBKDF2, iterations: int = PBKDF2_ITERATIONS,
                  salt: bytes | None = None) -> str:
    """The auth-file hash of ``password``: a fresh random salt (unless given) and the cost, in one string."""
    if not password:
        raise AuthError("the password is empty")
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    pw = password.encode("utf-8")
    if scheme == PBKDF2:
        if int(iterations) < 1:
            raise AuthError("iterations must be 1 or more")
        digest = hashlib.pbkdf2_hmac("sha256", pw, salt, int(iterations), HASH_BYTES)
        return f"{PBKDF2}${int(iterations)}${salt.hex()}${digest.hex()}"
    if scheme == SCRYPT:
        digest = hashlib.scrypt(pw, salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=HASH_BYTES,
                                maxmem=_scrypt_mem(SCRYPT_N, SCRYPT_R, SCRYPT_P))
        return f"{SCRYPT}${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"
    raise AuthError(f"unknown hash scheme {scheme!r}: use {PBKDF2} or {SCRYPT}")


def _scrypt_mem(n: int, r: int, p: int) -> int:
    return 128 * r * (n + p + 2) + (1 << 20)   # what OpenSSL's scrypt allocates, plus slack


def _int(text: str, what: str, low: int, high: int) -> int:
    if not text.isdigit() or not low <= int(text) <= high:
        raise AuthError(f"{what} must be a whole number in [{low}, {high}]")
    return int(text)


def _hex(text: str, what: str, low: int, high: int) -> bytes:
    try:
        value = bytes.fromhex(text)
    except ValueError:
        raise AuthError(f"{what} must be hexadecimal") from None
    if not low <= len(value) <= high:
        raise AuthError(f"{what} must be {low}-{high} bytes ({2 * low}-{2 * high} hex digits)")
    return value


def _derivation(encoded: str) -> tuple[Callable[[bytes], bytes], bytes]:
    """(password bytes -> digest, expected digest) of a stored hash; AuthError names what is malformed."""
    parts = encoded.split("$")
    if parts[0] == PBKDF2:
        if len(parts) != 4:
            raise AuthError(f"a {PBKDF2} hash is {PBKDF2}$ITERATIONS$SALT_HEX$HASH_HEX")
        iterations = _int(parts[1], "iterations", 1, 10 ** 8)
        salt, digest = _hex(parts[2], "salt", 8, 64), _hex(parts[3], "hash", 16, 64)
        return (lambda pw: hashlib.pbkdf2_hmac("sha256", pw, salt, iterations, len(digest))), digest
    if parts[0] == SCRYPT:
        if len(parts) != 6:
            raise AuthError(f"a {SCRYPT} hash is {SCRYPT}$N$R$P$SALT_HEX$HASH_HEX")
        n, r, p = _int(parts[1], "N", 2, 1 << 20), _int(parts[2], "R", 1, 64), _int(parts[3], "P", 1, 16)
        if n & (n - 1):
            raise AuthError("N must be a power of 2")
        if _scrypt_mem(n, r, p) > SCRYPT_MAX_BYTES:
            raise AuthError(f"N x R asks for more than {SCRYPT_MAX_BYTES >> 20} MiB")
        salt, digest = _hex(parts[4], "salt", 8, 64), _hex(parts[5], "hash", 16, 64)
        return (lambda pw: hashlib.scrypt(pw, salt=salt, n=n, r=r, p=p, dklen=len(digest),
                                          maxmem=_scrypt_mem(n, r, p))), digest
    raise AuthError(f"the hash must start with {PBKDF2}$ or {SCRYPT}$ (write one with: python -m flrdf hash-password)")


def check_hash(encoded: str) -> None:
    """Raises AuthError unless ``encoded`` is a well-formed hash this module can verify."""
    _derivation(encoded)


def verify_password(password: str, encoded: str) -> bool:
    """Whether ``password`` matches the stored hash (constant-time comparison of the digests)."""
    derive, digest = _derivation(encoded)
    return hmac.compare_digest(derive(str(password).encode("utf-8")), digest)


# ---------------------------------------------------------------- users and roles
@dataclass(frozen=True)
class Login:
    user: str
    encoded: str = field(repr=False)   # the stored hash
    role: str = EDITOR


def check_user(user: str) -> str:
    if not USER_RE.fullmatch(user):
        raise AuthError(USER_RULE)
    return user


def parse_auth_line(text: str) -> Login:
    """One auth-file line ``user:hash[:role]`` (AuthError says which part is wrong, without echoing it)."""
    fields = text.split(":")
    if len(fields) not in (2, 3):
        raise AuthError(f"expected user:hash or user:hash:role, found {len(fields)} ':'-separated fields")
    user, encoded = check_user(fields[0].strip()), fields[1].strip()
    role = fields[2].strip() if len(fields) == 3 else EDITOR
    if role not in ROLES:
        raise AuthError(f"role must be {EDITOR} or {VIEWER}, got {role[:20]!r}")
    check_hash(encoded)
    return Login(user, encoded, role)


def read_auth_file(path: str | Path) -> list[Login]:
    """Every login of an auth file; AuthError names the file and the line of the first problem."""
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise AuthError(f"auth file {path}: cannot read it ({why})") from None
    out: list[Login] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            login = parse_auth_line(line)
        except AuthError as exc:
            raise AuthError(f"auth file {path}, line {number}: {exc}") from None
        if login.user in seen:
            raise AuthError(f"auth file {path}, line {number}: user {login.user!r} is already on line "
                            f"{seen[login.user]}")
        seen[login.user] = number
        out.append(login)
    if not out:
        raise AuthError(f"auth file {path}: no user:hash lines (write them with: python -m flrdf hash-password)")
    return out


def parse_cli_login(text: str) -> Login:
    """``--auth USER:PASSWORD`` as a Login (the password hashed in memory; never echoed in a message)."""
    user, sep, password = str(text).partition(":")
    if not sep or not password:
        raise AuthError("--auth takes USER:PASSWORD (a user name, ':', a non-empty password)")
    return Login(check_user(user.strip()), hash_password(password), EDITOR)


class Logins:
    """Who may log in, and each one's role. No logins: no login page, and the local user is an editor
    unless ``read_only``; with ``read_only`` everyone is a viewer."""

    def __init__(self, logins: Iterable[Login] = (), read_only: bool = False):
        self._by_user: dict[str, Login] = {}
        for login in logins:
            if login.user in self._by_user:
                raise AuthError(f"user {login.user!r} is given twice (--auth and --auth-file)")
            self._by_user[login.user] = login
        self.read_only = bool(read_only)
        # what an unknown user is checked against: the default cost, a random salt and digest nobody matches
        self._absent = f"{PBKDF2}${PBKDF2_ITERATIONS}${secrets.token_hex(SALT_BYTES)}${secrets.token_hex(HASH_BYTES)}"

    @property
    def required(self) -> bool:
        return bool(self._by_user)

    def check(self, user: str, password: str) -> bool:
        """Gradio's ``auth`` callable. An unknown user costs a hash check too, so the time taken does not
        tell which user names exist."""
        login = self._by_user.get(str(user))
        if login is None:
            verify_password(str(password), self._absent)
            return False
        return verify_password(str(password), login.encoded)

    def role(self, username: str | None) -> str:
        if self.read_only:
            return VIEWER
        if not self.required:
            return EDITOR   # no login at all: the operator on the loopback address (or --no-auth)
        login = self._by_user.get(str(username)) if username is not None else None
        return login.role if login is not None else VIEWER   # logged in but unknown: never an editor


def load_logins(auth: Iterable[str] = (), auth_file: str | Path | None = None, read_only: bool = False) -> Logins:
    """The logins ``app.py`` was given: ``--auth USER:PASSWORD`` (editors) and ``--auth-file FILE``."""
    logins = [parse_cli_login(a) for a in auth or ()]
    if auth_file:
        logins += read_auth_file(auth_file)
    return Logins(logins, read_only)


# ---------------------------------------------------------------- when a login is required
def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable only from this machine: 127.0.0.0/8, ::1 or localhost."""
    text = str(host or "").strip().lower()
    if text in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(text.strip("[]")).is_loopback
    except ValueError:
        return False   # 0.0.0.0, ::, a LAN address or a host name: reachable from elsewhere


def exposure(host: str, share: bool) -> str | None:
    """How the page would be reachable from other machines, or None when it is not."""
    where = []
    if not is_loopback(host):
        where.append(f"--host {host}")
    if share:
        where.append("--share (a public gradio.live link)")
    return " and ".join(where) or None


def serving_check(host: str, share: bool, login_required: bool, no_auth: bool) -> tuple[str | None, str | None]:
    """(error, warning) for starting the dashboard: serving beyond loopback without a login is an error
    unless ``no_auth`` opts out, which is a warning instead."""
    if no_auth and login_required:
        return "--no-auth contradicts --auth/--auth-file: give one or the other", None
    where = exposure(host, share)
    if where is None or login_required:
        return None, None
    if no_auth:
        return None, (f"WARNING: serving on {where} without a login (--no-auth): anyone who reaches it can launch, "
                      "stop and resume training jobs and read every run.")
    return (f"refusing to serve on {where} without a login: anyone who reaches it could launch, stop and resume "
            "training jobs and read every run. Give --auth-file FILE (lines from `python -m flrdf hash-password`) "
            "or --auth USER:PASSWORD, or pass --no-auth to serve without a login on purpose."), None


# ---------------------------------------------------------------- python -m flrdf hash-password
def _read_password(stream=None) -> str:
    """The password: a prompt twice on a terminal, else the first line of stdin."""
    stream = stream or sys.stdin
    if stream.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            raise AuthError("the two passwords differ")
        return first
    return stream.readline().rstrip("\r\n")


def hash_password_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flrdf hash-password",
        description="Print one auth-file line (user:hash[:role]) for app.py --auth-file. The password is read "
                    "from the terminal (asked twice) or from the first line of stdin.")
    parser.add_argument("--user", default=None, help=f"{USER_RULE} (asked for on a terminal when not given)")
    parser.add_argument("--role", choices=ROLES, default=EDITOR,
                        help="editor (default): may launch, stop and resume jobs; viewer: looks only")
    parser.add_argument("--scheme", choices=(PBKDF2, SCRYPT), default=PBKDF2)
    parser.add_argument("--iterations", type=int, default=PBKDF2_ITERATIONS,
                        help=f"PBKDF2 iterations (default {PBKDF2_ITERATIONS})")
    args = parser.parse_args(argv)
    try:
        if args.user is None and not sys.stdin.isatty():
            raise AuthError("give --user NAME (the password comes from stdin)")
        user = check_user(args.user if args.user is not None else input("user: ").strip())
        encoded = hash_password(_read_password(), args.scheme, args.iterations)
    except AuthError as exc:
        print(f"hash-password: error: {exc}", file=sys.stderr)
        return 2
    print(f"{user}:{encoded}:{args.role}")
    return 0
