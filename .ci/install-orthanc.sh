#!/usr/bin/env bash
# Orthanc (a real PACS) with its DICOMweb plugin, for the archive round-trip test
# (tests/test_archive_orthanc.py). The test starts its own Orthanc on 127.0.0.1 with a temporary
# storage folder and skips with the reason where Orthanc is not installed.
set -euo pipefail
if command -v Orthanc >/dev/null 2>&1 && [ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ]; then
  exit 0
fi
if ! apt-cache show orthanc orthanc-dicomweb >/dev/null 2>&1; then
  apt-get update -qq
fi
flock /tmp/apt.lock apt-get install -y -qq orthanc orthanc-dicomweb >/dev/null \
  || echo "orthanc not installable: the Orthanc round-trip test will skip"
