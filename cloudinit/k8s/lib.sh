# shellcheck shell=bash disable=SC2034 # the constants are used by the scripts that source this
# Shared by the provision Kubernetes node scripts (sourced, never run). Installed with them under
# /usr/local/libexec/provision/k8s/. Plain file, no templating: every parameter is a file under
# $K8S_ETC, rendered by the seed.

# Exit codes shared by every script (the playbook maps them to messages).
readonly EXIT_FAIL=1        # a check does not hold, or a step failed
readonly EXIT_USAGE=2       # bad command line
readonly EXIT_REFUSED=3     # the bundle is tampered, incomplete or does not match the pins
readonly EXIT_NO_BINARY=4   # kubeadm/kubectl is not installed
readonly EXIT_CONFIG=5      # a file the seed should have rendered is missing or malformed

# Overridable for tests only; production uses the defaults.
K8S_ETC=${PROVISION_K8S_ETC:-/etc/provision/k8s}
K8S_STATE=${PROVISION_K8S_STATE:-/var/lib/provision/k8s}
readonly K8S_ETC K8S_STATE

readonly KUBE_DIR=/etc/kubernetes
readonly ADMIN_CONF=$KUBE_DIR/admin.conf
readonly BIN_DIR=/usr/local/bin

# One line on stderr, prefixed with the script's name, then exit with the given code.
die() {
	local code=$1
	shift
	printf '%s: %s\n' "${PROG:-provision-k8s}" "$*" >&2
	exit "$code"
}

say() {
	printf '%s: %s\n' "${PROG:-provision-k8s}" "$*"
}

# The refusal the integration test reaches on a node without binaries: before any side effect.
require_binary() {
	command -v "$1" >/dev/null 2>&1 ||
		die "$EXIT_NO_BINARY" "$1 is not installed: install a bundle or use install: apt"
}

require_root() {
	[ "$(id -u)" -eq 0 ] || die "$EXIT_FAIL" "must run as root"
}

require_file() {
	[ -f "$1" ] || die "$EXIT_CONFIG" "missing $1 (rendered by the seed)"
}

# A root-only secret file: owned by root (or by us, in tests), no group/other access.
require_private_file() {
	require_file "$1"
	local owner mode
	owner=$(stat -c %u -- "$1")
	mode=$(stat -c %a -- "$1")
	[ "$owner" -eq 0 ] || [ "$owner" -eq "$(id -u)" ] ||
		die "$EXIT_CONFIG" "$1 must be owned by root (owner uid $owner)"
	case $mode in
	*00) ;;
	*) die "$EXIT_CONFIG" "$1 must not be readable by group or others (mode $mode): chmod 0600" ;;
	esac
}

# Copy template $1 to $2 (a root-only file, mode 0600) replacing each placeholder NAME given
# as NAME=VALUE argument name with the value of the *environment variable* of the same name.
# Secrets travel through the environment (readable only by root in /proc), never argv.
render_private() {
	local template=$1 target=$2 tmp
	shift 2
	local name
	for name in "$@"; do
		grep -q "__${name}__" "$template" ||
			die "$EXIT_CONFIG" "$template has no __${name}__ placeholder"
	done
	tmp=$(umask 077 && mktemp "$target.XXXXXX")
	# shellcheck disable=SC2016 # awk program, not shell
	if ! NAMES="$*" awk '
		BEGIN { n = split(ENVIRON["NAMES"], names, " ") }
		{ for (i = 1; i <= n; i++) gsub("__" names[i] "__", ENVIRON[names[i]]); print }
	' "$template" >"$tmp"; then
		rm -f -- "$tmp"
		die "$EXIT_FAIL" "could not render $target"
	fi
	chmod 0600 "$tmp"
	mv -f -- "$tmp" "$target"
}
