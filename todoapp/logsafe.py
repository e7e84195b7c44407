"""One function for every text from a request that goes into a log line."""

# Longer texts are cut: a log line is not a place for a 1 MiB path.
MAX_LOGGED_CHARS = 1000


def loggable(text: str) -> str:
    """`text` with every control or non-ASCII character (and the backslash) escaped.

    So a request can never write a line break (a forged log line), a terminal escape
    or a look-alike character into the log: one request stays one line, as typed.
    """
    if len(text) > MAX_LOGGED_CHARS:
        text = text[:MAX_LOGGED_CHARS] + "..."
    if text.isascii() and text.isprintable() and "\\" not in text:
        return text  # the usual case, at the cost of two C-level scans
    return text.encode("unicode_escape").decode("ascii")
