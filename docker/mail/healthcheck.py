"""Healthcheck of the development mail server: SMTP answers NOOP and IMAP greets."""

import imaplib
import os
import smtplib
import sys

try:
    with smtplib.SMTP("127.0.0.1", int(os.environ.get("MAIL_SMTP_PORT", "2525")), timeout=5) as smtp:
        code, _ = smtp.noop()
        if code != 250:
            sys.exit(f"SMTP NOOP answered {code}")
    imap = imaplib.IMAP4("127.0.0.1", int(os.environ.get("MAIL_IMAP_PORT", "1143")), timeout=5)
    imap.logout()
except (OSError, smtplib.SMTPException, imaplib.IMAP4.error) as exc:
    sys.exit(f"mail server unhealthy: {exc.__class__.__name__}")
