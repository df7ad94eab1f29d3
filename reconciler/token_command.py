"""`reconciler token volcengine|aliyun`: print the join token a person (or an agent) enters a
room with.

The app keys come from the settings only, never from a flag: a flag ends up in shell history
and in `ps`. The token is the only thing on stdout (so `TOKEN=$(reconciler token ...)` works);
what it grants goes to stderr. `--format json` prints one document with the decoded fields
instead; neither form ever holds the key.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from typing import Any

from reconciler import cli_help, exit_codes
from reconciler.core.json_text import indented_json

_U32_MAX = 2**32 - 1
_HELP = argparse.RawDescriptionHelpFormatter

_EPILOG = f"""\
exit codes:
  0    the token was printed
  1    the app key (or the ARTC app id) is not configured, or the expiry is not after the
       issue time
{cli_help.COMMON_EXITS}

settings read: RECONCILER_VOLCENGINE__APP_KEY (volcengine);
RECONCILER_ALIYUN__ARTC_APP_ID and RECONCILER_ALIYUN__ARTC_APP_KEY (aliyun).
{cli_help.SETTINGS}"""


def add_parser(commands: Any) -> None:
    """Register `token` and its two providers on the top-level subcommands."""
    token = commands.add_parser(
        "token",
        help="print an RTC join token for a room (app keys come from settings)",
        description="Print an RTC join token. The app key is read from the settings, never "
        "from a flag.",
        epilog=_EPILOG,
        formatter_class=_HELP,
    )
    providers = token.add_subparsers(dest="token_provider", required=True, metavar="PROVIDER")

    volc = providers.add_parser(
        "volcengine",
        help="a version-001 Volcengine RTC token",
        description="A version-001 Volcengine RTC join token for --user in --room.",
        epilog=_EPILOG,
        formatter_class=_HELP,
    )
    volc.add_argument("--app-id", required=True, type=_app_id, metavar="ID")
    volc.add_argument("--room", required=True, type=_rtc_id, metavar="ROOM")
    volc.add_argument("--user", required=True, type=_rtc_id, metavar="USER")
    _validity_options(volc)
    volc.add_argument(
        "--issued-at",
        type=_epoch,
        metavar="EPOCH",
        help="the token's issue time, epoch seconds (default: now)",
    )
    volc.add_argument("--nonce", type=_epoch, metavar="N", help="a 32-bit number (default: random)")
    volc.add_argument(
        "--no-publish",
        action="store_true",
        help="a listen-only user: grant subscribing, not publishing",
    )
    volc.add_argument(
        "--publish-expire-at",
        type=_epoch,
        metavar="EPOCH",
        help="when publishing stops being allowed, 0 = never (default: the token's expiry)",
    )
    volc.add_argument(
        "--subscribe-expire-at",
        type=_epoch,
        metavar="EPOCH",
        default=0,
        help="when subscribing stops being allowed, 0 = never (default: %(default)s)",
    )
    _format_option(volc)

    ali = providers.add_parser(
        "aliyun",
        help="an Alibaba Cloud ARTC AuthToken",
        description="An ARTC AuthToken for --user in --channel, made as the agent's is at "
        "every Start.",
        epilog=_EPILOG,
        formatter_class=_HELP,
    )
    ali.add_argument("--channel", required=True, type=_artc_id, metavar="CHANNEL")
    ali.add_argument("--user", required=True, type=_artc_id, metavar="USER")
    _validity_options(ali)
    ali.add_argument("--nonce", metavar="TEXT", help="the token's nonce (default: random)")
    _format_option(ali)


def _validity_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--expire",
        type=_positive_seconds,
        metavar="SECONDS",
        help="validity from issue time (default: 86400, 24 h)",
    )
    group.add_argument("--expire-at", type=_epoch, metavar="EPOCH", help="expiry as epoch seconds")


def _format_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="text: the token alone on stdout; json: one document with the decoded fields "
        "(default: %(default)s)",
    )


def _rtc_id(text: str) -> str:
    from reconciler.providers.volcengine.rtc_token import id_problem

    problem = id_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"{text!r} {problem}")
    return text


def _app_id(text: str) -> str:
    from reconciler.providers.volcengine.rtc_token import app_id_problem

    problem = app_id_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"{text!r} {problem}")
    return text


def _artc_id(text: str) -> str:
    # The rule the aliyun schema applies to RuntimeConfig.ChannelId and AgentUserId.
    if 1 <= len(text) <= 64 and all(c.isascii() and (c.isalnum() or c in "_-") for c in text):
        return text
    raise argparse.ArgumentTypeError(
        f"{text!r} must be 1 to 64 characters, each a letter, a digit, _ or -"
    )


def _epoch(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 0 <= value <= _U32_MAX:
        raise argparse.ArgumentTypeError(f"must be 0 to {_U32_MAX}, got {value}")
    return value


def _positive_seconds(text: str) -> int:
    value = _epoch(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def token(args: argparse.Namespace) -> int:
    from reconciler.settings import load_settings

    settings = load_settings()
    if args.token_provider == "volcengine":
        return _volcengine(args, settings)
    return _aliyun(args, settings)


def _expiry(args: argparse.Namespace, issued_at: int, default_validity: int) -> int:
    from reconciler.errors import ReconcilerError

    if args.expire_at is not None:
        expire_at = int(args.expire_at)
    else:
        expire_at = issued_at + (args.expire or default_validity)
    if expire_at <= issued_at:
        raise ReconcilerError(
            f"--expire-at {expire_at} is not after the issue time {issued_at}: "
            "the token would never be valid"
        )
    if expire_at > _U32_MAX:
        raise ReconcilerError(f"the expiry {expire_at} does not fit in 32 bits")
    return expire_at


def _volcengine(args: argparse.Namespace, settings: Any) -> int:
    import secrets

    from reconciler.errors import SettingsError
    from reconciler.providers.volcengine.rtc_token import (
        DEFAULT_VALIDITY_SECONDS,
        Privilege,
        make_rtc_token,
        privileges_for,
        read_rtc_token,
    )

    key = settings.volcengine.app_key
    if key is None or not key.get_secret_value():
        raise SettingsError(
            "the RTC app key is not set: set RECONCILER_VOLCENGINE__APP_KEY "
            "(it is never taken from a flag)"
        )
    issued_at = args.issued_at if args.issued_at is not None else int(time.time())
    expire_at = _expiry(args, issued_at, DEFAULT_VALIDITY_SECONDS)
    publish_expire_at = args.publish_expire_at if args.publish_expire_at is not None else expire_at
    nonce = args.nonce if args.nonce is not None else secrets.randbelow(_U32_MAX + 1)
    privileges = privileges_for(
        publish=not args.no_publish,
        publish_expire_at=publish_expire_at,
        subscribe=True,
        subscribe_expire_at=args.subscribe_expire_at,
    )
    made = make_rtc_token(
        args.app_id,
        key.get_secret_value(),
        args.room,
        args.user,
        nonce=nonce,
        issued_at=issued_at,
        expire_at=expire_at,
        privileges=privileges,
    )
    claims = read_rtc_token(made)
    names = {int(p): _privilege_name(p.name) for p in Privilege}
    granted = {names.get(pid, str(pid)): at for pid, at in sorted(claims.privileges.items())}
    if args.format == "json":
        _print_json(
            {
                "provider": "volcengine",
                "token": made,
                "version": made[:3],
                "app_id": claims.app_id,
                "room_id": claims.room_id,
                "user_id": claims.user_id,
                "nonce": claims.nonce,
                "issued_at": claims.issued_at,
                "expire_at": claims.expire_at,
                "expires": _iso(claims.expire_at),
                "privileges": granted,
            }
        )
        return exit_codes.OK
    rights = "subscribe only" if args.no_publish else "publish and subscribe"
    print(
        f"Volcengine RTC token for user {args.user} in room {args.room} (app {args.app_id}): "
        f"{rights}, expires {_iso(expire_at)}{_expired_note(expire_at)}.",
        file=sys.stderr,
    )
    print(made)
    return exit_codes.OK


def _aliyun(args: argparse.Namespace, settings: Any) -> int:
    from reconciler.providers.aliyun.auth_token import (
        DEFAULT_VALIDITY_SECONDS,
        make_auth_token,
        read_auth_token,
    )
    from reconciler.settings import artc_app

    app = artc_app(settings)
    expire_at = _expiry(args, int(time.time()), DEFAULT_VALIDITY_SECONDS)
    made = make_auth_token(app.app_id, app.app_key, args.channel, args.user, expire_at, args.nonce)
    claims = read_auth_token(made)
    if args.format == "json":
        _print_json(
            {
                "provider": "aliyun",
                "token": made,
                "app_id": claims.app_id,
                "channel_id": claims.channel_id,
                "user_id": claims.user_id,
                "nonce": claims.nonce,
                "expire_at": claims.expires_at,
                "expires": _iso(claims.expires_at),
            }
        )
        return exit_codes.OK
    print(
        f"ARTC AuthToken for user {args.user} in channel {args.channel} (app {app.app_id}): "
        f"expires {_iso(expire_at)}{_expired_note(expire_at)}.",
        file=sys.stderr,
    )
    print(made)
    return exit_codes.OK


def _privilege_name(enum_name: str) -> str:
    return "".join(part.capitalize() for part in enum_name.split("_"))


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _expired_note(expire_at: int) -> str:
    return " (already expired)" if expire_at <= time.time() else ""


def _print_json(document: dict[str, Any]) -> None:
    sys.stdout.write(indented_json(document) + "\n")
