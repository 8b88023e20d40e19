"""An SMTP server for cairn's notification tests (started by scripts/test-servers).

aiosmtpd on HOST:PORT with STARTTLS required before anything else, AUTH
(PLAIN and LOGIN) required for mail, one user whose password is the first
line of PWFILE, and every accepted message saved as one file in MAILDIR
(written under a temporary name, then renamed, so a reader never sees half
a message).

    smtp-server.py HOST PORT CERT KEY USER PWFILE MAILDIR
"""
import asyncio
import os
import signal
import ssl
import sys
import time

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

host, port, cert, key, user, pwfile, maildir = sys.argv[1:]
with open(pwfile) as f:
    password = f.readline().strip()
os.makedirs(maildir, exist_ok=True)


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login.decode() == user
        and auth_data.password.decode() == password
    )
    # handled=False: aiosmtpd answers 235 or 535 itself (with True it
    # answers nothing and the client waits).
    return AuthResult(success=ok, handled=False)


class Save:
    counter = 0

    async def handle_DATA(self, server, session, envelope):
        Save.counter += 1
        name = f"{time.time_ns()}-{os.getpid()}-{Save.counter}.eml"
        tmp = os.path.join(maildir, "." + name + ".tmp")
        with open(tmp, "wb") as f:
            # The envelope, which the headers need not match, then the message.
            f.write(f"X-Envelope-From: {envelope.mail_from}\r\n".encode())
            f.write(f"X-Envelope-To: {', '.join(envelope.rcpt_tos)}\r\n".encode())
            f.write(envelope.original_content)
        os.rename(tmp, os.path.join(maildir, name))
        return "250 OK saved"


def main():
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    handler = Save()

    def factory():
        return SMTP(
            handler,
            hostname="cairn-test-smtp",
            tls_context=context,
            require_starttls=True,
            auth_required=True,
            auth_require_tls=True,
            authenticator=authenticator,
            timeout=60,
            loop=loop,
        )

    server = loop.run_until_complete(loop.create_server(factory, host, int(port)))
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    loop.add_signal_handler(signal.SIGINT, loop.stop)
    try:
        loop.run_forever()
    finally:
        server.close()
        loop.run_until_complete(server.wait_closed())


main()
