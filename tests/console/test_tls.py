"""``farm console --ca FILE``: the link trusts that CA through its own SSL context,
whatever SSL_CERT_FILE says, against a real leader serving TLS."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from farmtui.console.app import FarmConsole
from farmtui.console.link import Backoff
from farmtui.errors import ConfigError
from tests.console.conftest import wait_for
from tests.console.screen import screen_text
from tests.helpers.leader import leader_in_process
from tests.helpers.tls import self_signed_certificate


async def test_the_console_trusts_the_ca_it_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = self_signed_certificate(tmp_path)
    # The environment points at another CA: only the explicit context can succeed.
    other = tmp_path / "other"
    other.mkdir()
    other_cert, _ = self_signed_certificate(other)
    monkeypatch.setenv("SSL_CERT_FILE", str(other_cert))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    async with leader_in_process(tmp_path, tls=(cert, key)) as farm:
        trusting = FarmConsole(
            farm.url, farm.admin_token, ca=str(cert), backoff=Backoff(base=0.05, cap=0.2)
        )
        async with trusting.run_test(size=(80, 24)) as pilot:
            await wait_for(pilot, lambda: trusting.state.synced, what="a snapshot over wss")
            assert trusting.state.role == "admin"
            assert "admin" in screen_text(trusting)
            assert "unreachable" not in screen_text(trusting)

        doubting = FarmConsole(farm.url, farm.admin_token, backoff=Backoff(base=0.05, cap=0.2))
        async with doubting.run_test(size=(200, 24)) as pilot:
            # Said as the CLI says it: refused, not unreachable, and what to do about it
            # (between tries: each shows "connecting" for a moment).
            await wait_for(
                pilot,
                lambda: (
                    "CERTIFICATE_VERIFY_FAILED" in screen_text(doubting)
                    and "the leader refused this console" in screen_text(doubting)
                ),
                what="the certificate refused, on the banner",
            )
            assert "give that CA's PEM file with --ca FILE" in doubting.screen.link.error
            assert not doubting.state.synced

        # A CA file given, but not the one that signed the leader's certificate.
        wrong = FarmConsole(
            farm.url, farm.admin_token, ca=str(other_cert), backoff=Backoff(base=0.05, cap=0.2)
        )
        async with wrong.run_test(size=(200, 24)) as pilot:
            await wait_for(pilot, lambda: wrong.screen.link.refused, what="refused")
            assert f"the CA file {other_cert} did not sign it" in wrong.screen.link.error


def test_a_ca_file_that_will_not_do_is_refused_before_the_screen_opens(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the CA file"):
        FarmConsole("https://127.0.0.1:1", "t", ca=str(tmp_path / "missing.pem"))
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="no usable PEM certificate"):
        FarmConsole("https://127.0.0.1:1", "t", ca=str(junk))
    fifo = tmp_path / "fifo.pem"
    os.mkfifo(fifo)  # opening it would wait for a writer for ever
    with pytest.raises(ConfigError, match="is not a regular file"):
        FarmConsole("https://127.0.0.1:1", "t", ca=str(fifo))
