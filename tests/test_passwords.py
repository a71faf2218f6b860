"""`taskapi.passwords`: bcrypt called directly, in the format passlib wrote before."""

import bcrypt
import pytest

from taskapi import passwords
from taskapi.passwords import hash_password, verify_password
from tests.support.environment import configure

# Written by passlib 1.9 (libpass, `CryptContext(schemes=["bcrypt"], bcrypt__rounds=4)`),
# which hashed the passwords of every account made before passlib was dropped.
PASSLIB_HASH = "$2b$04$fyDyZwhHv78p/ipgGvl3KOTkKAm3FpuLgBltxdxVYuBRm4ld5tqlm"
PASSLIB_PASSWORD = "correct horse battery"


def test_a_hash_passlib_wrote_still_verifies() -> None:
    assert verify_password(PASSLIB_PASSWORD, PASSLIB_HASH)
    assert not verify_password(PASSLIB_PASSWORD + "!", PASSLIB_HASH)
    assert not verify_password("Correct horse battery", PASSLIB_HASH)


@pytest.mark.parametrize("rounds", ["4", "5"])
def test_hashes_take_the_configured_cost(monkeypatch: pytest.MonkeyPatch, rounds: str) -> None:
    configure(monkeypatch, bcrypt_rounds=rounds)
    hashed = hash_password("pässwörd, ünicode")
    assert hashed.startswith(f"$2b${int(rounds):02d}$")
    assert len(hashed) == 60
    assert hash_password("pässwörd, ünicode") != hashed  # a salt of its own each time
    assert verify_password("pässwörd, ünicode", hashed)
    assert not verify_password("passwörd, ünicode", hashed)


def test_an_unknown_account_costs_one_check_at_the_configured_cost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    configure(monkeypatch, bcrypt_rounds="5")
    passwords.prepare_password_checks()
    checked: list[bytes] = []
    real_checkpw = bcrypt.checkpw

    def recording(password: bytes, hashed: bytes) -> bool:
        checked.append(hashed)
        return real_checkpw(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", recording)
    assert not verify_password("dummy password for unknown accounts", None)
    assert len(checked) == 1
    assert checked[0].startswith(b"$2b$05$")
