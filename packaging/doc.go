// Package packaging holds no code: it is the home of the .deb/.rpm build (build.sh,
// nfpm.yaml, the maintainer scripts in scripts/, the default configuration file) and of
// the tests that check them and the systemd units in ../systemd with the real dpkg, rpm
// and systemd-analyze. docs/packaging.md describes the packages.
package packaging
