"""Warning templates: the built-in ones shipped in the package and an admin's overrides,
read once (at start-up) so that building a warning does no I/O.

A template file is UTF-8 text: an optional first line `Subject: ...`, an empty line,
then the body; both use `string.Template` $-placeholders. The file for a language and
audience is looked up in the override directory first (`<dir>/<lang>/<audience>.txt`),
then among the built-ins; a language without that file falls back to the configured
default language, then to English, which is always built in."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template
from typing import Literal

from mailguard.settings.virus import LANGUAGE_RE

log = logging.getLogger("mailguard.notify")

Audience = Literal["recipient", "sender", "admin"]
AUDIENCES: tuple[Audience, ...] = ("recipient", "sender", "admin")
FALLBACK_LANGUAGE = "en"
DEFAULT_SUBJECT = "VIRUS WARNING : $virus"
MAX_TEMPLATE_BYTES = 64 * 1024
_SUBJECT_LINE = re.compile(r"^subject:[ \t]*(.*)$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class WarningTemplate:
    subject: Template
    body: Template
    origin: str  # "builtin" or the override file's path, for logs


def parse_template(text: str, origin: str) -> WarningTemplate:
    """Split a template file into subject and body (see the module docstring)."""
    text = text.replace("\r\n", "\n").lstrip("\ufeff")
    first, _, rest = text.partition("\n")
    match = _SUBJECT_LINE.match(first)
    if match:
        subject, body = match.group(1).strip() or DEFAULT_SUBJECT, rest.removeprefix("\n")
    else:
        subject, body = DEFAULT_SUBJECT, text
    return WarningTemplate(Template(subject), Template(body), origin)


def normalise_language(tag: str | None) -> list[str]:
    """Candidate directory names for a language tag, most specific first:
    "de-AT" → ["de-at", "de"]; an invalid tag (a path, junk) → []."""
    if not tag:
        return []
    t = tag.strip().lower().replace("_", "-")
    if not LANGUAGE_RE.match(t):
        return []
    primary = t.split("-", 1)[0]
    return [t] if t == primary else [t, primary]


class TemplateSet:
    """All templates by (language, audience): overrides, then built-ins."""

    def __init__(
        self,
        builtin: Mapping[tuple[str, str], WarningTemplate],
        overrides: Mapping[tuple[str, str], WarningTemplate] | None = None,
    ) -> None:
        if (FALLBACK_LANGUAGE, "admin") not in builtin:
            raise ValueError("the built-in English templates are missing")
        self._builtin = dict(builtin)
        self._overrides = dict(overrides or {})

    @classmethod
    def load(cls, override_dir: str | Path | None = None) -> TemplateSet:
        """Read the built-in templates and, if given, the admin's directory. A broken
        override file is logged and skipped (the built-in one is used): an admin's typo
        must not stop the warnings."""
        builtin = dict(_read_builtin())
        overrides = dict(_read_dir(Path(override_dir))) if override_dir else {}
        return cls(builtin, overrides)

    def languages(self) -> list[str]:
        return sorted({lang for lang, _ in (*self._builtin, *self._overrides)})

    def exists(self, language: str, audience: Audience) -> bool:
        return (language, audience) in self._overrides or (language, audience) in self._builtin

    def get(self, language: str, audience: Audience) -> WarningTemplate:
        """The template for `language` and `audience`: the override, else the built-in,
        else the English one (never fails)."""
        for key in ((language, audience), (FALLBACK_LANGUAGE, audience)):
            found = self._overrides.get(key) or self._builtin.get(key)
            if found is not None:
                return found
        return self._builtin[(FALLBACK_LANGUAGE, "admin")]  # never reached with the package


def _read_builtin() -> Iterable[tuple[tuple[str, str], WarningTemplate]]:
    root = resources.files("mailguard.notify").joinpath("templates")
    for lang_dir in root.iterdir():
        if not lang_dir.is_dir() or not LANGUAGE_RE.match(lang_dir.name):
            continue
        for audience in AUDIENCES:
            f = lang_dir.joinpath(f"{audience}.txt")
            if f.is_file():
                yield (lang_dir.name, audience), parse_template(f.read_text("utf-8"), "builtin")


def _read_dir(root: Path) -> Iterable[tuple[tuple[str, str], WarningTemplate]]:
    try:
        lang_dirs = sorted(root.iterdir())
    except OSError as exc:
        log.warning("event=templates_unreadable dir=%r error=%r", str(root), str(exc))
        return
    for lang_dir in lang_dirs:
        lang = lang_dir.name.lower().replace("_", "-")
        if not lang_dir.is_dir() or not LANGUAGE_RE.match(lang):
            continue
        for audience in AUDIENCES:
            path = lang_dir / f"{audience}.txt"
            if not path.is_file():
                continue
            try:
                data = path.read_bytes()
                if len(data) > MAX_TEMPLATE_BYTES:
                    raise ValueError(f"larger than {MAX_TEMPLATE_BYTES} bytes")
                text = data.decode("utf-8")
            except (OSError, ValueError) as exc:
                log.warning("event=template_skipped path=%r error=%r", str(path), str(exc))
                continue
            yield (lang, audience), parse_template(text, str(path))
