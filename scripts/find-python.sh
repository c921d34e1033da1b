#!/usr/bin/env bash
# Prints the path of a working Python 3.13 interpreter, or explains what to install.
# `python3.13` may be a pyenv shim that fails unless 3.13 is selected, so every
# candidate is executed, not just looked up.
set -u
try() { "$1" -c 'import sys; assert sys.version_info[:2] == (3, 13)' >/dev/null 2>&1 && { command -v "$1" 2>/dev/null || echo "$1"; exit 0; }; }
[ -n "${PYTHON:-}" ] && try "$PYTHON"
try python3.13
if command -v pyenv >/dev/null 2>&1; then
  for p in "$(pyenv root)"/versions/3.13*/bin/python3.13; do [ -x "$p" ] && try "$p"; done
fi
for p in /usr/local/bin/python3.13 /usr/bin/python3.13 "$HOME"/.pyenv/versions/3.13*/bin/python3.13; do [ -x "$p" ] && try "$p"; done
echo "Python 3.13 not found. Install it (e.g. 'pyenv install 3.13' or your OS package python3.13)," >&2
echo "or point PYTHON=/path/to/python3.13 at one." >&2
exit 1
