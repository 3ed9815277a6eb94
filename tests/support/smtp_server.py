"""The test SMTP server of amtsbote's mail tests and benchmark (tests/support/smtp.rs starts it).

Run with Debian's /usr/bin/python3 (python3-aiosmtpd belongs to it; another python3 may come
first on PATH). Listens on 127.0.0.1 only.

    /usr/bin/python3 tests/support/smtp_server.py --port PORT --store DIR
        [--tls none|starttls|implicit --cert PEM --key PEM] [--auth USER:PASSWORD]

Prints "READY <port>" on stdout once it accepts connections.

Every accepted message is stored before the 250 answer as one file DIR/msg-*.json (written
under a temporary name and renamed, so a reader never sees half a file):
    {"message_id": the Message-ID header without <>, or "" when it has none,
     "mail_from": the envelope sender, "rcpt": [envelope recipients], "raw": base64 of DATA}
A message stored is a message accepted: counting files by message_id counts deliveries.
DIR/connections holds the number of connections accepted since the store was made.

TLS: "starttls" offers STARTTLS and refuses MAIL before it (530); "implicit" speaks TLS from
the first byte. --auth USER:PASSWORD requires AUTH (PLAIN or LOGIN) before MAIL (530 without,
535 for wrong credentials); with STARTTLS, AUTH is offered only after it.

Fault injection, deterministic, decided by each recipient address (local part before "@",
compared without regard to case):
    fail451      451 4.3.0 at RCPT, every time
    fail550      550 5.1.1 at RCPT, every time
    fail451xN    (N a number, e.g. fail451x2) RCPT accepted; 451 4.3.0 after DATA for the
                 first N attempts of each Message-ID, then accepted. Attempts are counted in
                 DIR/attempts.json, so they survive a restart on the same store.
    fail552      552 5.3.4 after DATA, every time (message refused for good)
    *@down.test  the whole domain down: 451 4.4.1 at RCPT, every time
Every other address is accepted.
"""

import argparse
import asyncio
import base64
import itertools
import json
import os
import re
import ssl
import sys
import time

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

MESSAGE_ID = re.compile(rb"^message-id:[ \t]*(.*(?:\r?\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)
RETRY_N = re.compile(r"^fail451x(\d+)$")


def message_id_of(raw: bytes) -> str:
    """The Message-ID header of the message's header block, without <> and folding."""
    head = re.split(rb"\r?\n\r?\n", raw, maxsplit=1)[0]
    found = MESSAGE_ID.search(head)
    if not found:
        return ""
    return found.group(1).decode("utf-8", "replace").strip().strip("<>").strip()


class Store:
    def __init__(self, path: str):
        self.path = path
        self.counter = itertools.count()
        self.attempts_file = os.path.join(path, "attempts.json")
        try:
            with open(self.attempts_file) as f:
                self.attempts = json.load(f)
        except (OSError, ValueError):
            self.attempts = {}

    def write_atomically(self, name: str, data: bytes):
        tmp = os.path.join(self.path, f".{name}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, os.path.join(self.path, name))

    def connection_opened(self):
        path = os.path.join(self.path, "connections")
        try:
            with open(path) as f:
                count = int(f.read() or 0)
        except (OSError, ValueError):
            count = 0
        self.write_atomically("connections", str(count + 1).encode())

    def attempt(self, key: str) -> int:
        """Counts one more attempt for key; returns the count."""
        self.attempts[key] = self.attempts.get(key, 0) + 1
        self.write_atomically("attempts.json", json.dumps(self.attempts).encode())
        return self.attempts[key]

    def keep(self, message_id: str, mail_from: str, rcpt: list, raw: bytes):
        record = {"message_id": message_id, "mail_from": mail_from, "rcpt": rcpt, "raw": base64.b64encode(raw).decode()}
        name = f"msg-{time.time_ns()}-{os.getpid()}-{next(self.counter)}.json"
        self.write_atomically(name, json.dumps(record).encode())


class Handler:
    def __init__(self, store: Store):
        self.store = store

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local, _, domain = address.lower().rpartition("@")
        if domain == "down.test":
            return "451 4.4.1 down.test is down (test server: the whole domain)"
        if local == "fail451":
            return "451 4.3.0 fail451: try again later (test server)"
        if local == "fail550":
            return "550 5.1.1 fail550: no such mailbox (test server)"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.content if isinstance(envelope.content, bytes) else envelope.content.encode()
        message_id = message_id_of(raw)
        for address in envelope.rcpt_tos:
            local = address.lower().rpartition("@")[0]
            if local == "fail552":
                return "552 5.3.4 fail552: message refused (test server)"
            retry = RETRY_N.match(local)
            if retry:
                n = int(retry.group(1))
                attempt = self.store.attempt(f"{message_id or address}|{local}")
                if attempt <= n:
                    return f"451 4.3.0 {local}: attempt {attempt} of {n} refused, try again (test server)"
        self.store.keep(message_id, envelope.mail_from, list(envelope.rcpt_tos), raw)
        return "250 2.0.0 OK: queued"


def main():
    parser = argparse.ArgumentParser(description="amtsbote's test SMTP server (aiosmtpd)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--store", required=True)
    parser.add_argument("--tls", choices=["none", "starttls", "implicit"], default="none")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--auth", help="USER:PASSWORD")
    args = parser.parse_args()

    os.makedirs(args.store, exist_ok=True)
    store = Store(args.store)
    context = None
    if args.tls != "none":
        if not (args.cert and args.key):
            parser.error("--tls starttls|implicit needs --cert and --key")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)

    smtp_options = {"hostname": "smtp.test", "enable_SMTPUTF8": True, "timeout": 60}
    if args.tls == "starttls":
        smtp_options.update(tls_context=context, require_starttls=True)
    if args.auth:
        user, _, password = args.auth.partition(":")
        user, password = user.encode(), password.encode()

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = isinstance(auth_data, LoginPassword) and auth_data.login == user and auth_data.password == password
            return AuthResult(success=ok, handled=False)

        # With STARTTLS, AUTH only after it; on a plain or implicit-TLS connection at once.
        smtp_options.update(authenticator=authenticator, auth_required=True, auth_require_tls=(args.tls == "starttls"))

    handler = Handler(store)

    def new_connection():
        store.connection_opened()
        return SMTP(handler, **smtp_options)

    async def serve():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            new_connection,
            host="127.0.0.1",
            port=args.port,
            ssl=context if args.tls == "implicit" else None,
            reuse_address=True,
        )
        print(f"READY {args.port}", flush=True)
        async with server:
            await server.serve_forever()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
