#!/usr/bin/env bash
# Print the newest Python >= 3.12 found (LocalStack needs it): PATH first, then pyenv's versions.
# Prints nothing when there is none; the Makefile then says so.
ok() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null; }
pyenv_root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
candidates=(python3.14 python3.13 python3.12 python3)
while IFS= read -r found; do candidates+=("$found"); done < <(
    ls -d "$pyenv_root"/versions/3.*/bin/python 2>/dev/null | sort -rV
)
for candidate in "${candidates[@]}"; do
    path=$(command -v "$candidate" 2>/dev/null) || continue
    if ok "$path"; then
        echo "$path"
        exit 0
    fi
done
