"""Shared helpers: start the server process, make enrolled clients."""

import asyncio
import json
import os
import subprocess
import tempfile

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
