#!/usr/bin/env bash
# Install the Debian packages anybind's demo, tests and corpora need, when missing (idempotent).
set -euo pipefail
# corpora (anybind corpus NAME): emoji = fonts-noto-color-emoji + unicode-data (emoji-test.txt: names, groups);
# openclipart = openclipart-svg (25 MB download) + wamerican (English word list of its title rule);
# fashion-mnist = dataset-fashion-mnist (31 MB); sounds = sound-theme-freedesktop
# instruments = fluid-soundfont-gm (FluidR3 GM soundfont, 148 MB) + fluidsynth (renders it)
# chromium: the web page's end-to-end test (tests/test_web_e2e.py) drives /usr/bin/chromium with Playwright
PKGS=(tuxpaint-stamps-default libsndfile1 libcairo2 espeak-ng
      fonts-noto-color-emoji unicode-data openclipart-svg wamerican dataset-fashion-mnist sound-theme-freedesktop
      fluid-soundfont-gm fluidsynth
      chromium)
# ktuberling = ktuberling-data (sprites in themed SVG scenes + human recordings of their words, ~70 MB)
PKGS+=(ktuberling-data)
# emoji's captions in ~140 locales + keywords = unicode-cldr-core (CLDR common/annotations)
PKGS+=(unicode-cldr-core)
# icons = papirus-icon-theme (23 MB download, ~200 MB installed, many symlinks; GPL-3): named icons, names that
# read as words (wamerican) as captions
PKGS+=(papirus-icon-theme)
# ... and the same standard names drawn in other styles: breeze (3 MB download), faenza (17 MB), numix (2 MB), tango
# (1 MB) icon themes (anybind.corpora.icons_themes.THEMES)
PKGS+=(breeze-icon-theme faenza-icon-theme numix-icon-theme tango-icon-theme)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "anybind needs these Debian packages: ${missing[*]}; run: apt-get install -y ${missing[*]}" >&2; exit 1
  fi
fi
echo "installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${missing[@]}"; }
