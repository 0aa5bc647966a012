"""Pages of the web app (see app.Pages for the toolkit every page module uses)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.routing import BaseRoute

if TYPE_CHECKING:
    from mailguard.web.app import Pages


def routes(pages: Pages) -> list[BaseRoute]:
    return []
