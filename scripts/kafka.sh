#!/usr/bin/env bash
# Installs Apache Kafka for the tests from Maven Central with Maven (e2e/kafka/pom.xml) into
# target/kafka/<version>/libs; does nothing when that is already there. Prints the libs directory.
# Needs Java 17+ and Maven (installed from Debian when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' e2e/kafka/pom.xml)
libs="target/kafka/$version/libs"
stamp="target/kafka/$version/.pom"
if [[ -d "$libs" ]] && cmp -s e2e/kafka/pom.xml "$stamp"; then
  echo "$libs"
  exit 0
fi
if ! command -v mvn >/dev/null 2>&1 || ! command -v java >/dev/null 2>&1; then
  sudo_=""; [ "$(id -u)" -eq 0 ] || sudo_="sudo"
  $sudo_ apt-get update -qq && $sudo_ apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless maven >/dev/null
fi
rm -rf "$libs"
mkdir -p "$libs"
mvn -q -B -Dstyle.color=never -f e2e/kafka/pom.xml dependency:copy-dependencies -DincludeScope=runtime \
  -DoutputDirectory="$PWD/$libs" >&2
cp e2e/kafka/pom.xml "$stamp"
echo "$libs"
