"""The password backend of `[auth]`, shared by SMTP AUTH and the web page's login."""

from __future__ import annotations

from mailguard.auth.base import Authenticator
from mailguard.clock import Clock
from mailguard.config import Config
from mailguard.store.database import Database


def build_authenticator(config: Config, db: Database, clock: Clock) -> Authenticator:
    """The `mail_user` table (argon2), or the configured checkpassword program."""
    cfg = config.auth
    if cfg.backend == "checkpassword":
        from mailguard.auth.checkpassword import CheckpasswordAuth  # noqa: PLC0415

        return CheckpasswordAuth(cfg.checkpassword, clock,
                                 timeout_s=cfg.checkpassword_timeout_s)
    from mailguard.auth.users import UserTableAuth  # noqa: PLC0415
    from mailguard.store.accounts import AccountStore  # noqa: PLC0415

    return UserTableAuth(AccountStore(db))
