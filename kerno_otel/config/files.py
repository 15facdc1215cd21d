"""Reading the config file as a security tool should: no one else's file, no planted symlink.

The config decides where the audit log goes, what is redacted and which plugins
load, so a file another user can change is refused (issue 11, item 14), the way
sshd's ``StrictModes`` refuses an ``authorized_keys`` others can write:

- the file must be a regular file owned by root or by the user the daemon runs as,
  and not writable by its group or by others;
- a symlink at the config path is followed only when the link itself is owned by
  root or by that user (a Kubernetes ConfigMap mount is a chain of root-owned
  links); the file it leads to passes the same checks, on the descriptor that is read.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from kerno_otel.config.values import ConfigError

#: Symlinks followed at most, so a loop is an error rather than a hang.
_MAX_LINKS = 8


def _trusted_owner(uid: int) -> bool:
    return uid in (0, os.geteuid())


def _owner_name(uid: int) -> str:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (KeyError, ImportError):  # pragma: no cover - an unnamed uid
        return f"uid {uid}"


def read_config_file(file: Path) -> str:
    """The text of ``file``, or a :class:`ConfigError` naming it and saying what is wrong."""
    path = str(file)
    for _ in range(_MAX_LINKS):
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            raise ConfigError(f"{file}: no such config file") from None
        except OSError as exc:
            raise ConfigError(f"{file}: cannot read config: {exc.strerror}") from None
        if not stat.S_ISLNK(info.st_mode):
            break
        if not _trusted_owner(info.st_uid):
            raise ConfigError(
                f"{file}: refused: {path} is a symlink owned by {_owner_name(info.st_uid)}, "
                "not by root or the user kerno-otel runs as"
            )
        target = os.readlink(path)
        path = os.path.join(os.path.dirname(path), target)
    else:
        raise ConfigError(f"{file}: refused: more than {_MAX_LINKS} symlinks")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError(f"{file}: no such config file") from None
    except OSError as exc:
        # ELOOP: the link was swapped between the checks and the open.
        raise ConfigError(f"{file}: cannot read config: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        _check(file, info)
        data = handle.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{file}: cannot read config: not UTF-8 ({exc.reason})") from None


def _check(file: Path, info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{file}: refused: not a regular file")
    if not _trusted_owner(info.st_uid):
        raise ConfigError(
            f"{file}: refused: owned by {_owner_name(info.st_uid)}, "
            "not by root or the user kerno-otel runs as"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        who = "others" if info.st_mode & stat.S_IWOTH else "its group"
        mode = stat.S_IMODE(info.st_mode)
        raise ConfigError(
            f"{file}: refused: writable by {who} (mode {mode:04o}); chmod go-w {file}"
        )
