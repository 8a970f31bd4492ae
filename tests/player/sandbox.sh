#!/bin/bash
# Test side only (never part of imagectl): runs a build-instance script as root in an isolated root, the way a
# build instance would run it, without touching the host.
#
#   tests/player/sandbox.sh [--hide PATH]... SCRATCH SCRIPT [ARGS...]
#
# --hide PATH hides a host file inside the sandbox (a base image without curl: --hide /usr/bin/curl).
#
# Isolation, measured on the development machines and CI (root, util-linux unshare, overlayfs):
#   - new mount, PID, UTS and IPC namespaces (`unshare --mount --pid --uts --ipc --fork`, mounts private);
#   - the root is an overlayfs with lowerdir=/ and its upper and work directories in SCRATCH: every write
#     (the installer's files, the generalize step emptying /etc/machine-id and deleting SSH host keys) lands in
#     SCRATCH/upper, never on the host;
#   - /proc of the new PID namespace, a fresh /tmp, /run and /dev/shm (tmpfs), a minimal /dev (null, zero, full,
#     random, urandom, tty bound from the host: no disks), /sys read-only, then chroot;
#   - a clean environment (as cloud-init gives), stdin from /dev/null.
#   - reboot, poweroff, shutdown, halt, init, telinit and systemctl are replaced (in the upper directory) by shims
#     that record the call in SCRATCH/record/calls: nothing reaches the host's init. A power-off or reboot ends the
#     sandbox as it would end the machine (every process in the PID namespace is killed), and is noted in
#     SCRATCH/record/power. A reboot(2) system call from inside only ends the PID namespace.
#   - host files that would make the built-in hygiene scan fail on a development machine (shell history, SSH
#     authorized keys, credential files of /root and /home/*, world-writable system files) are masked in the
#     upper directory, so the sandbox looks like a clean base image.
# The network is shared: the script reaches the emulator on 127.0.0.1 through its presigned URLs.
# This isolates from accidents, not from malice: the script runs as root.
#
# Output: the script's stdout and stderr pass through; SCRATCH/record/exit-code holds its exit status
# (137 when a power-off shim ended it); this script exits with that status.
set -euo pipefail

die() { echo "sandbox: $*" >&2; exit 125; }

# Names the shims stand in for, and the directories (resolved, so /sbin -> usr/sbin is written once) they go to.
POWER_COMMANDS=(reboot poweroff shutdown halt init telinit)
SHIM_DIRS=(/sbin /usr/sbin /bin /usr/bin)
HOME_FILES=(.bash_history .zsh_history .sh_history .ash_history .history .local/share/fish/fish_history
  .python_history .ssh/authorized_keys .ssh/authorized_keys2 .aws/credentials .netrc .git-credentials .pgpass
  .docker/config.json)
SCANNED_DIRS=(/etc /usr/bin /usr/sbin /usr/lib /usr/local/bin)

# ---- Inside the namespaces (PID 1 of the new PID namespace) ----
inner() {
  local scratch=$1 script=$2
  shift 2
  # Safety: this must be the init of a new PID namespace, or a power-off shim could signal host processes.
  [[ $$ -eq 1 ]] || die "not in a new PID namespace (pid $$)"
  local root="$scratch/root"
  mount --make-rprivate /
  mount -t overlay overlay -o "lowerdir=/,upperdir=$scratch/upper,workdir=$scratch/work" "$root"
  mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
  mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/tmp"
  mount -t tmpfs -o mode=755,nosuid,nodev tmpfs "$root/run"
  mkdir -p "$root/run/imagectl-player" "$root/run/lock"
  mount --bind "$scratch/record" "$root/run/imagectl-player"
  # A minimal /dev: the character devices programs expect, no disks.
  mount -t tmpfs -o mode=755,nosuid tmpfs "$root/dev"
  local node
  for node in null zero full random urandom tty; do
    touch "$root/dev/$node"
    mount --bind "/dev/$node" "$root/dev/$node"
  done
  ln -s /proc/self/fd "$root/dev/fd"
  ln -s /proc/self/fd/0 "$root/dev/stdin"
  ln -s /proc/self/fd/1 "$root/dev/stdout"
  ln -s /proc/self/fd/2 "$root/dev/stderr"
  mkdir -p "$root/dev/shm" "$root/dev/pts"
  mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/dev/shm"
  if [[ -d /sys/kernel ]]; then
    mount --bind /sys "$root/sys"
    mount -o remount,bind,ro "$root/sys"
  fi
  hostname imagectl-build-instance

  local interpreter=()
  if [[ "$(head -c 2 "$root/var/lib/imagectl-player/script")" != '#!' ]]; then
    interpreter=(/bin/sh)
  fi
  # This shell's own stderr goes quiet (a power-off kills the script, and bash would say "Killed"); the script's
  # stderr is the original one (fd 3).
  exec 3>&2 2>/dev/null
  set +e
  chroot "$root" /usr/bin/env -i \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 TERM=dumb \
    /bin/sh -c 'cd / && exec "$@"' sh "${interpreter[@]}" /var/lib/imagectl-player/script "$@" </dev/null 2>&3 3>&-
  local code=$?
  set -e
  echo "$code" >"$scratch/record/exit-code"
  exit "$code"
}

if [[ "${1:-}" == --inner ]]; then
  shift
  inner "$@"
fi

# ---- On the host: prepare SCRATCH, then enter the namespaces ----
hide=()
while [[ "${1:-}" == --hide ]]; do
  [[ $# -ge 2 ]] || die "--hide needs a path"
  [[ "$2" == /* ]] || die "--hide needs an absolute path: $2"
  hide+=("$2")
  shift 2
done
[[ $# -ge 2 ]] || die "usage: sandbox.sh [--hide PATH]... SCRATCH SCRIPT [ARGS...]"
[[ $EUID -eq 0 ]] || die "must run as root (overlay mounts and chroot)"
command -v unshare >/dev/null || die "unshare (util-linux) is not installed"
grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || die "the kernel has no overlayfs"

mkdir -p "$1"
scratch=$(cd "$1" && pwd)
script=$2
shift 2
[[ -f "$script" ]] || die "no script at $script"
for dir in upper work root; do
  [[ ! -e "$scratch/$dir" ]] || die "$scratch/$dir exists: use a fresh scratch directory"
done
upper="$scratch/upper"
mkdir -p "$upper" "$scratch/work" "$scratch/root" "$scratch/record"
: >"$scratch/record/calls"
rm -f "$scratch/record/power" "$scratch/record/exit-code"

# Creates the parents of PATH in the upper directory with the host's owner and mode (a directory created there
# with other attributes would change them in the sandbox: /root must stay 0700).
upper_parents() {
  local path=$1 parent
  parent=$(dirname "$path")
  [[ "$parent" == / || -d "$upper$parent" ]] && return
  upper_parents "$parent"
  mkdir "$upper$parent"
  if [[ -d "$parent" ]]; then
    chown --reference="$parent" "$upper$parent"
    chmod --reference="$parent" "$upper$parent"
  fi
}

# A whiteout (character device 0/0) hides a host file inside the sandbox.
mask() {
  upper_parents "$1"
  mknod "$upper$1" c 0 0
}

# The script, where the sandbox's root sees it.
upper_parents /var/lib/imagectl-player/script
mkdir -p "$upper/var/lib/imagectl-player"
cp "$script" "$upper/var/lib/imagectl-player/script"
chmod 755 "$upper/var/lib/imagectl-player/script"

# Mask what would make the built-in scan fail on this machine (only names are tested, nothing is read).
shopt -s nullglob
for home in /root /home/*; do
  [[ -d "$home" ]] || continue
  for file in "${HOME_FILES[@]}"; do
    if [[ -e "$home/$file" || -L "$home/$file" ]]; then mask "$home/$file"; fi
  done
done
for file in "${hide[@]}"; do
  if [[ -e "$file" || -L "$file" ]]; then mask "$file"; fi
done
while IFS= read -r file; do
  upper_parents "$file"
  cp -a "$file" "$upper$file"
  chmod o-w "$upper$file"
done < <(find -H "${SCANNED_DIRS[@]}" -xdev -type f -perm -0002 -print 2>/dev/null)

# The shims. One file serves every name; it tells by $0 what it stands for.
shim_text() {
  cat <<'SHIM'
#!/bin/sh
# imagectl instance player (test side): stands in for the machine's power commands inside the sandbox.
name=${0##*/}
printf '%s %s\n' "$name" "$*" >>/run/imagectl-player/calls
action=
case "$name" in
  reboot) action=reboot ;;
  poweroff | halt) action=poweroff ;;
  shutdown)
    case " $* " in
      *" -c "*) exit 0 ;;
      *" -r "* | *" --reboot "*) action=reboot ;;
      *) action=poweroff ;;
    esac
    ;;
  init | telinit)
    case "$1" in 0) action=poweroff ;; 6) action=reboot ;; *) exit 0 ;; esac
    ;;
  systemctl)
    for arg in "$@"; do
      case "$arg" in
        reboot | kexec | soft-reboot | reboot.target | kexec.target) action=reboot ;;
        poweroff | halt | poweroff.target | halt.target) action=poweroff ;;
      esac
    done
    # No init runs in the sandbox: other systemctl calls are recorded and succeed.
    [ -n "$action" ] || exit 0
    ;;
esac
echo "$action" >>/run/imagectl-player/power
# The machine goes away: every process of the sandbox but its init (which then exits) and this one.
kill -s KILL -- -1 2>/dev/null
exit 0
SHIM
}
declare -A written=()
for dir in "${SHIM_DIRS[@]}"; do
  [[ -d "$dir" ]] || continue
  real=$(readlink -f "$dir")
  [[ -z "${written[$real]:-}" ]] || continue
  written[$real]=1
  upper_parents "$real/x"
  [[ -d "$upper$real" ]] || { mkdir "$upper$real"; chmod --reference="$real" "$upper$real"; }
  case "$real" in
    */sbin) names=("${POWER_COMMANDS[@]}") ;;
    *) names=() ;;
  esac
  [[ -e "$real/systemctl" ]] && names+=(systemctl)
  for name in "${names[@]}"; do
    rm -f "$upper$real/$name"
    shim_text >"$upper$real/$name"
    chmod 755 "$upper$real/$name"
  done
done

# The directories mounted over inside must exist in the merged root.
for dir in proc tmp run dev sys; do
  [[ -d "/$dir" ]] || { upper_parents "/$dir/x"; mkdir -p "$upper/$dir"; }
done

set +e
unshare --mount --pid --uts --ipc --fork --propagation private -- "$BASH" "${BASH_SOURCE[0]}" --inner "$scratch" "$script" "$@"
code=$?
set -e
# If the namespace's init was killed from outside, no exit code was written.
[[ -s "$scratch/record/exit-code" ]] || echo "$code" >"$scratch/record/exit-code"
exit "$code"
