#!/usr/bin/env python3
"""The instance player: test side only, never part of imagectl.

The AWS emulator never runs build instances: it neither executes user data nor SSM commands. The player plays the
instance. It runs the exact script imagectl handed to an instance in an isolated root (tests/player/sandbox.sh:
namespaces, an overlay over /, chroot), so the script's presigned uploads reach the emulator's S3 as they would
from a real instance, and when the script powers off, it stops the instance in the emulator, as the VM would.

    instance_player.py play --endpoint URL --regions r1,r2 --workdir DIR [--once | --until-idle SECONDS] [--log FILE]
    instance_player.py run --script FILE --workdir DIR [--hide PATH]... [--log FILE]
    instance_player.py check

play   polls the emulator for EC2 instances tagged imagectl:build-id in state pending or running and plays what each
       was handed: its user data (DescribeInstanceAttribute userData) when that is a `#!` script, and every
       AWS-RunShellScript command sent to it (ListCommands, Parameters["commands"] joined into a script run by
       /bin/sh, as the SSM agent does). Each play runs in a thread of its own (builds overlap; plays of one instance
       run one after the other) and is recorded in DIR/<region>/<instance>/<what>/: script, output.log, record.json,
       scratch/ (the sandbox: upper/ holds every file the script changed). What was played is remembered in
       DIR/played.json, so a restarted player does not play anything twice. Without --once or --until-idle it runs
       until SIGTERM or SIGINT, which also ends the sandboxes still running.
run    plays one script in DIR and prints its record (JSON) on stdout. --hide PATH hides a host file from the
       sandbox (e.g. /usr/bin/curl, to play a base image that has only wget).
check  tells whether sandboxes can run here: exit 0; exit 2 when a prerequisite is missing (not root, no unshare,
       no overlayfs); exit 1 when the sandbox is broken. The reason goes to stdout.

Windows scripts (AWS-RunPowerShellScript, <powershell> user data) cannot be played here; they are logged and left.
The player is quiet: warnings go to stderr, everything else to --log FILE when given.
"""

import argparse
import base64
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SANDBOX = Path(__file__).resolve().with_name("sandbox.sh")
BUILD_TAG = "imagectl:build-id"
# A play that takes longer than this is ended (the script's own installer timeout should have fired long before).
DEFAULT_MAX_SECONDS = 4 * 3600

log = logging.getLogger("instance-player")


class Player:
    """Runs scripts in sandboxes; ends them all on stop()."""

    def __init__(self, max_seconds):
        self.max_seconds = max_seconds
        self.lock = threading.Lock()
        self.running = {}  # pid -> Popen
        self.stopping = threading.Event()

    def play(self, script_text, play_dir, hide=()):
        """Runs `script_text` in a sandbox under `play_dir`; returns the record (also written to record.json)."""
        play_dir = Path(play_dir)
        play_dir.mkdir(parents=True, exist_ok=True)
        script = play_dir / "script"
        script.write_text(script_text)
        scratch = play_dir / "scratch"
        output = play_dir / "output.log"
        started = time.monotonic()
        ended_by_player = False
        with open(output, "wb") as out:
            # A session of its own, so that the whole sandbox (unshare and the namespace's init) can be ended.
            process = subprocess.Popen(
                ["bash", str(SANDBOX), *[a for path in hide for a in ("--hide", path)], str(scratch), str(script)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            with self.lock:
                self.running[process.pid] = process
            try:
                exit_code = process.wait(timeout=self.max_seconds)
            except subprocess.TimeoutExpired:
                ended_by_player = True
                self._kill(process)
                exit_code = process.wait()
            finally:
                with self.lock:
                    self.running.pop(process.pid, None)
        if self.stopping.is_set():
            ended_by_player = True
        duration = time.monotonic() - started
        record_dir = scratch / "record"
        record = {
            "exitCode": _read_int(record_dir / "exit-code", exit_code),
            "durationSeconds": round(duration, 3),
            # What the script asked of the machine's power commands (the sandbox's shims): "poweroff", "reboot".
            "power": _read_lines(record_dir / "power"),
            "calls": _read_lines(record_dir / "calls"),
            "endedByPlayer": ended_by_player,
            "output": str(output),
            "upper": str(scratch / "upper"),
        }
        (play_dir / "record.json").write_text(json.dumps(record, indent=2) + "\n")
        log.info("played %s: exit %s in %.1f s, power %s", play_dir, record["exitCode"], duration, record["power"])
        return record

    def stop(self):
        self.stopping.set()
        with self.lock:
            processes = list(self.running.values())
        for process in processes:
            self._kill(process)

    @staticmethod
    def _kill(process):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _read_lines(path):
    try:
        return [line for line in Path(path).read_text().splitlines() if line]
    except FileNotFoundError:
        return []


def _read_int(path, default):
    try:
        return int(Path(path).read_text().strip())
    except (FileNotFoundError, ValueError):
        return default


# ---- run ----

def cmd_run(args):
    player = Player(args.max_seconds)
    _stop_on_signals(player)
    record = player.play(Path(args.script).read_text(), args.workdir, hide=args.hide)
    json.dump(record, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


# ---- check ----

def cmd_check(_args):
    missing = sandbox_prerequisites_missing()
    if missing:
        print(missing)
        return 2
    broken = sandbox_broken()
    if broken:
        print(broken)
        return 1
    print("sandboxes can run here")
    return 0


def sandbox_prerequisites_missing():
    """Why sandboxes cannot run on this machine at all (not root, no unshare, no overlayfs), or None."""
    if os.geteuid() != 0:
        return "not root: the sandbox needs overlay mounts, namespaces and chroot"
    if not shutil.which("unshare"):
        return "unshare (util-linux) is not installed"
    try:
        filesystems = Path("/proc/filesystems").read_text()
    except OSError:
        filesystems = ""
    if not any(line.split()[-1:] == ["overlay"] for line in filesystems.splitlines()):
        if subprocess.run(["modprobe", "overlay"], capture_output=True).returncode != 0:
            return "the kernel has no overlayfs"
    return None


def sandbox_broken():
    """Why a sandbox does not work although its prerequisites are there, or None: a probe writes a file."""
    with tempfile.TemporaryDirectory(prefix="imagectl-player-check-") as tmp:
        script = Path(tmp) / "probe.sh"
        script.write_text("#!/bin/sh\necho probe > /etc/imagectl-player-probe && exit 0\n")
        result = subprocess.run(
            ["bash", str(SANDBOX), str(Path(tmp) / "scratch"), str(script)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0:
            return "the sandbox does not start: " + (result.stderr.strip() or f"exit {result.returncode}")
        if Path("/etc/imagectl-player-probe").exists():
            return "the sandbox wrote through to the host (overlay not effective)"
        if not (Path(tmp) / "scratch/upper/etc/imagectl-player-probe").exists():
            return "the sandbox's writes did not land in its upper directory"
    return None


# ---- play ----

class Emulator:
    """boto3 clients for one region of the emulator (never real AWS: the endpoint is required)."""

    def __init__(self, endpoint, region):
        import boto3

        session = boto3.session.Session(
            aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
            aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
            region_name=region,
        )
        self.region = region
        self.ec2 = session.client("ec2", endpoint_url=endpoint)
        self.ssm = session.client("ssm", endpoint_url=endpoint)

    def build_instances(self):
        filters = [
            {"Name": "tag-key", "Values": [BUILD_TAG]},
            {"Name": "instance-state-name", "Values": ["pending", "running"]},
        ]
        for page in self.ec2.get_paginator("describe_instances").paginate(Filters=filters):
            for reservation in page.get("Reservations", []):
                for instance in reservation.get("Instances", []):
                    tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
                    yield instance["InstanceId"], tags.get(BUILD_TAG, "")

    def user_data(self, instance_id):
        answer = self.ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
        value = answer.get("UserData", {}).get("Value")
        return base64.b64decode(value).decode("utf-8", "replace") if value else ""

    def commands(self, instance_id):
        commands, token = [], None
        while True:
            kwargs = {"InstanceId": instance_id}
            if token:
                kwargs["NextToken"] = token
            page = self.ssm.list_commands(**kwargs)
            commands.extend(page.get("Commands", []))
            token = page.get("NextToken")
            if not token:
                break
        return sorted(commands, key=lambda c: str(c.get("RequestedDateTime", "")))

    def stop(self, instance_id):
        self.ec2.stop_instances(InstanceIds=[instance_id])


class Played:
    """The set of plays already started, kept in a file so that a restarted player plays nothing twice."""

    def __init__(self, path):
        self.path = Path(path)
        self.lock = threading.Lock()
        try:
            self.keys = set(json.loads(self.path.read_text()))
        except (FileNotFoundError, ValueError):
            self.keys = set()

    def claim(self, key):
        with self.lock:
            if key in self.keys:
                return False
            self.keys.add(key)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(sorted(self.keys), indent=1))
            tmp.replace(self.path)
            return True


def discover(emulator, warned):
    """(key, instance, what, script) for everything the build instances of one region were handed."""
    found = []
    for instance_id, build_id in emulator.build_instances():
        user_data = emulator.user_data(instance_id)
        if user_data.startswith("#!"):
            found.append((f"{emulator.region}/{instance_id}/user-data", instance_id, "user-data", user_data))
        elif user_data.strip() and instance_id not in warned:
            warned.add(instance_id)
            log.warning("%s: user data that is not a #! script (Windows?) cannot be played here", instance_id)
        for command in emulator.commands(instance_id):
            key = f"{emulator.region}/{instance_id}/ssm-{command['CommandId']}"
            if command.get("DocumentName") == "AWS-RunShellScript":
                script = "\n".join(command.get("Parameters", {}).get("commands", [])) + "\n"
                # moto 5.2.5 attaches a command sent with InstanceIds (and no Targets) to every instance of the
                # region: its empty target filter matches them all. When a command lists several instances, play
                # it only where it belongs, on the instance whose build ID it carries.
                if len(command.get("InstanceIds", [])) > 1 and (not build_id or build_id not in script):
                    continue
                found.append((key, instance_id, f"ssm-{command['CommandId']}", script))
            elif key not in warned:
                warned.add(key)
                log.warning("%s: %s cannot be played here", key, command.get("DocumentName"))
    return found


def cmd_play(args):
    player = Player(args.max_seconds)
    _stop_on_signals(player)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    played = Played(workdir / "played.json")
    emulators = [Emulator(args.endpoint, region) for region in args.regions.split(",") if region]
    instance_locks = {}
    threads = []
    warned = set()
    last_activity = [time.monotonic()]
    activity_lock = threading.Lock()

    def touch():
        with activity_lock:
            last_activity[0] = time.monotonic()

    def play_one(emulator, key, instance_id, what, script):
        try:
            with instance_locks.setdefault(instance_id, threading.Lock()):
                record = player.play(script, workdir / emulator.region / instance_id / what)
                if "poweroff" in record["power"] and not record["endedByPlayer"]:
                    # What the VM would do: it stops, and EC2 says so.
                    emulator.stop(instance_id)
                    log.info("%s: powered off, stopped", instance_id)
        except Exception:  # a play must never take the player down
            log.exception("playing %s failed", key)
        finally:
            touch()

    while not player.stopping.is_set():
        for emulator in emulators:
            try:
                found = discover(emulator, warned)
            except Exception as error:  # the emulator restarting, a network blip: try again next round
                log.warning("polling %s failed: %s", emulator.region, error)
                continue
            for key, instance_id, what, script in found:
                if not played.claim(key):
                    continue
                log.info("playing %s", key)
                touch()
                thread = threading.Thread(
                    target=play_one, args=(emulator, key, instance_id, what, script), name=key, daemon=True
                )
                thread.start()
                threads.append(thread)
        threads = [t for t in threads if t.is_alive()]
        if args.once:
            break
        if args.until_idle is not None and not threads:
            with activity_lock:
                idle = time.monotonic() - last_activity[0]
            if idle >= args.until_idle:
                break
        player.stopping.wait(args.poll_interval)
    for thread in threads:
        thread.join()
    return 0


def _stop_on_signals(player):
    def handler(signum, _frame):
        log.info("signal %s: stopping", signum)
        player.stop()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, handler)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log", help="write the player's log to this file")
    sub = parser.add_subparsers(dest="command", required=True)

    play = sub.add_parser("play", help="play the build instances found in the emulator")
    play.add_argument("--endpoint", required=True, help="the emulator's URL, e.g. http://127.0.0.1:5000")
    play.add_argument("--regions", required=True, help="comma-separated regions to poll")
    play.add_argument("--workdir", required=True)
    mode = play.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="poll once, play what was found, wait for it, exit")
    mode.add_argument("--until-idle", type=float, metavar="SECONDS",
                      help="exit when nothing has run or appeared for SECONDS")
    play.add_argument("--poll-interval", type=float, default=1.0, metavar="SECONDS")
    play.add_argument("--max-seconds", type=float, default=DEFAULT_MAX_SECONDS, help="end a play after this long")
    play.add_argument("--log", dest="log_sub", help=argparse.SUPPRESS)

    run = sub.add_parser("run", help="play one script")
    run.add_argument("--script", required=True)
    run.add_argument("--workdir", required=True)
    run.add_argument("--max-seconds", type=float, default=DEFAULT_MAX_SECONDS)
    run.add_argument("--hide", action="append", default=[], metavar="PATH", help="hide a host file from the sandbox")
    run.add_argument("--log", dest="log_sub", help=argparse.SUPPRESS)

    sub.add_parser("check", help="can sandboxes run here?")

    args = parser.parse_args(argv)
    log_file = getattr(args, "log_sub", None) or args.log
    if log_file:
        logging.basicConfig(filename=log_file, level=logging.INFO,
                            format="%(asctime)s %(levelname)s %(threadName)s %(message)s")
        # Warnings also reach stderr.
        console = logging.StreamHandler()
        console.setLevel(logging.WARNING)
        logging.getLogger().addHandler(console)
    else:
        logging.basicConfig(level=logging.WARNING, format="instance-player: %(levelname)s %(message)s")
    logging.getLogger("botocore").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)

    return {"play": cmd_play, "run": cmd_run, "check": cmd_check}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
