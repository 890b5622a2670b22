"""Shared helpers: start a server process (the in-process test server or a real
`kepu-server`), make enrolled clients."""

import asyncio
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request

import kepu_mobile_ffi as k


class Server:
    """The test server process (`KEPU_TEST_SERVER`), seeded with one confirmed booking."""

    def __init__(self):
        self.proc = subprocess.Popen(
            [os.environ["KEPU_TEST_SERVER"]],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.world = json.loads(self.proc.stdout.readline())

    def ask(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def code(self, role, pupil=None):
        return self.ask(f"code {role} {pupil or ''}".strip())

    def gate_code(self):
        return self.ask("gate")

    def stop(self):
        try:
            self.ask("quit")
        except (BrokenPipeError, ValueError):
            pass
        self.proc.wait(timeout=10)


def run(coro):
    return asyncio.run(coro)


def open_client(server, directory=None):
    directory = directory or tempfile.mkdtemp(prefix="kepu-py-")
    client = k.KepuClient.open(
        directory, server.world["url"], server.world["server_public_key"]
    )
    return client, directory


def enrolled(server, role, pupil=None, want=None):
    client, directory = open_client(server)
    run(client.enroll(server.code(role, pupil)))
    if want:
        client.add_document(want)
        run(client.sync_now())
    return client, directory


class RealServer:
    """A real `kepu-server` (`KEPU_SERVER`) on a free local port with a fresh data dir,
    seeded through its admin CLI: one school with two teachers and pupils, one venue with
    a staff (gate) device. `stop()` ends the process and removes the data dir."""

    def __init__(self, pupils=5):
        self.binary = os.environ["KEPU_SERVER"]
        self.data_dir = tempfile.mkdtemp(prefix="kepu-server-")
        self.proc = None
        try:
            self._seed(pupils)
            self._start()
        except BaseException:
            self.stop()
            raise

    def admin(self, *args):
        done = subprocess.run(
            [self.binary, "--data-dir", self.data_dir, "admin", *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"admin {args[0]} failed: {done.stderr.strip()}")
        return done.stdout

    def _user(self, *args):
        lines = dict(
            line.rsplit(" ", 1) for line in self.admin("create-user", *args).splitlines()
        )
        return lines["user"], lines["enrollment code"]

    def _seed(self, pupils):
        city = self.admin("create-city", "--name", "Test City").strip()
        county = self.admin("create-county", "--city", city, "--name", "Test County").strip()
        self.school = self.admin("create-school", "--county", county, "--name", "School").strip()
        self.venue = self.admin("create-venue", "--county", county, "--name", "Museum").strip()
        csv = os.path.join(self.data_dir, "pupils.csv")
        with open(csv, "w") as f:
            f.write("display_name\n" + "".join(f"Pupil {i}\n" for i in range(pupils)))
        out = self.admin("import-pupils", "--school", self.school, csv)
        self.pupils = [line.split()[-1] for line in out.splitlines() if " pupil " in line]
        assert len(self.pupils) == pupils, out
        self.teachers = [
            self._user("--role", "teacher", "--school", self.school)[0] for _ in range(2)
        ]
        self.staff_user, _ = self._user("--role", "venue-staff", "--venue", self.venue)

    def _start(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.log = open(os.path.join(self.data_dir, "server.log"), "w")
        self.proc = subprocess.Popen(
            [self.binary, "--data-dir", self.data_dir, "--bind", f"127.0.0.1:{port}"],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kepu-server exited: {self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"kepu-server not ready: {self.log_tail()}")
            time.sleep(0.1)

    def log_tail(self):
        try:
            with open(os.path.join(self.data_dir, "server.log")) as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def code(self, user):
        """A fresh one-time enrollment code for `user` (a user id)."""
        return self.admin("enroll-code", "--user", user).strip()

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if getattr(self, "log", None):
            self.log.close()
        shutil.rmtree(self.data_dir, ignore_errors=True)


def enrolled_at(server, user, want=None):
    """A client enrolled with the real server; the server's key comes from enrollment."""
    directory = tempfile.mkdtemp(prefix="kepu-py-")
    client = k.KepuClient.open(directory, server.url, None)
    run(client.enroll(server.code(user)))
    if want:
        client.add_document(want)
        run(client.sync_now())
    return client, directory


def until(what, check, timeout=30, every=0.2):
    """Polls `check()` until it returns something truthy; fails naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)
