#!/usr/bin/env bash
# Debian's chromium and chromium-driver for the labelling page's browser test (tests/test_label.py),
# installed when missing and apt-get can run; elsewhere that test is skipped and says why.
command -v chromium >/dev/null && command -v chromedriver >/dev/null && exit 0
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } >/dev/null 2>&1 \
    || echo "tests/install_browser.sh: apt-get could not install chromium chromium-driver; the browser test will be skipped"
else
  echo "tests/install_browser.sh: no chromium (install chromium and chromedriver); the browser test will be skipped"
fi
exit 0
