"""PII scrubbing for text that leaves the request: dead-letter messages, logs, Sentry events."""

import re

_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"), "<email>"),
    (re.compile(r"(?i)\b(authorization)([\"']?\s*[:=]\s*)[^\n\r\"']+"), r"\1\2<redacted>"),
    (re.compile(r"(?i)\b(password|secret|api[_-]?key)([\"']?\s*[:=]\s*)[^\s,;\"']+"), r"\1\2<redacted>"),
    (re.compile(r"(?i)\b(token|bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 <redacted>"),
]


# Every pattern above needs one of these: most text (SQL, URLs, span names) has none, and one
# search is cheaper than four substitutions (tracing redacts every span attribute, core/tracing.py).
_TRIGGERS = re.compile(r"(?i)@|authorization|password|secret|api[_-]?key|token|bearer|basic")


def redact(text: str) -> str:
    if not _TRIGGERS.search(text):
        return text
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


_VOLATILE: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"), "<uuid>"),
    (re.compile(r"\b0x[0-9a-fA-F]+\b"), "<hex>"),
    (re.compile(r"\b[0-9a-fA-F]{12,}\b"), "<hex>"),
    (re.compile(r"\d+(\.\d+)?"), "<n>"),
]


def normalise(text: str) -> str:
    """Strip ids and numbers so the same failure on different objects groups together."""
    text = redact(text)
    for pattern, replacement in _VOLATILE:
        text = pattern.sub(replacement, text)
    return text.strip()[:500]
