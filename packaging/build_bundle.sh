#!/usr/bin/env bash
# Build the one-folder desktop bundle with PyInstaller: dist/contrastive-explorer/, with the
# executable dist/contrastive-explorer/contrastive-explorer, and a .tar.gz of it.
#
#   packaging/build_bundle.sh [PYTHON]     # PYTHON defaults to .venv/bin/python
#
# The bundle carries the torch of that environment: the standard CUDA build (several GB), or
# the CPU-only build for a small bundle:
#   python3 -m venv .venv-cpu
#   .venv-cpu/bin/pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu
#   .venv-cpu/bin/pip install -e . && packaging/build_bundle.sh .venv-cpu/bin/python
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${1:-.venv/bin/python}

"$PYTHON" -m PyInstaller --version >/dev/null 2>&1 || "$PYTHON" -m pip install pyinstaller
# The icons are committed; render them again only if the SVG is newer.
svg=assets/icons/contrastive-explorer.svg
png=assets/icons/hicolor/512x512/apps/contrastive-explorer.png
if [ ! -f "$png" ] || [ "$svg" -nt "$png" ]; then
    "$PYTHON" packaging/make_icons.py
fi

start=$(date +%s)
"$PYTHON" -m PyInstaller --noconfirm --clean \
    --distpath dist --workpath build/pyinstaller \
    packaging/pyinstaller/contrastive-explorer.spec
bundle=dist/contrastive-explorer

# Desktop integration files beside the executable, laid out as under /usr (share/...), so
# the folder can be copied to /opt and linked from ~/.local/share.
mkdir -p "$bundle/share/applications" "$bundle/share/metainfo" "$bundle/share/icons"
cp packaging/linux/contrastive-explorer.desktop "$bundle/share/applications/"
cp packaging/linux/io.github.contrastive_explorer.metainfo.xml "$bundle/share/metainfo/"
cp -r assets/icons/hicolor "$bundle/share/icons/"

# Smoke test: the worker mode answers without a display.
"$bundle/contrastive-explorer" --engine train --help >/dev/null

echo "built $bundle in $(( $(date +%s) - start )) s: $(du -sh "$bundle" | cut -f1)"
if [ "${NO_TARBALL:-0}" != 1 ]; then
    tar -C dist -czf dist/contrastive-explorer-linux-x86_64.tar.gz contrastive-explorer
    echo "archive: $(du -sh dist/contrastive-explorer-linux-x86_64.tar.gz | cut -f1)"
fi
