"""The registry's security-relevant helpers on exact values (issue 19: the mutation gate showed that
turning a revoked token's check into "matches" or dropping the database file's 0600 mode went
unnoticed by the registry's own tests)."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from cloud_server.registry import REVOKED, Registry, _private_file, hash_token, token_matches


def test_a_revoked_token_matches_nothing_not_even_its_own_marker() -> None:
    for presented in (REVOKED, "", "any-token"):
        assert token_matches(REVOKED, presented) is False


def test_hashed_tokens_match_only_the_token_they_hash() -> None:
    stored = hash_token("tok-1")
    assert stored == "sha256:" + hashlib.sha256(b"tok-1").hexdigest()
    assert token_matches(stored, "tok-1") is True
    for wrong in ("tok-2", "", stored, "tok-1 "):
        assert token_matches(stored, wrong) is False


def test_plain_tokens_from_an_older_registry_match_exactly() -> None:
    assert token_matches("plain-token", "plain-token") is True
    for wrong in ("plain-toke", "plain-token2", "", "PLAIN-TOKEN"):
        assert token_matches("plain-token", wrong) is False


def test_a_new_sqlite_file_is_private_and_an_existing_one_is_left_alone(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # a ":memory:" taken for a file name would be created here
    fresh = tmp_path / "fresh.sqlite3"
    _private_file(str(fresh))
    assert fresh.exists() and stat.S_IMODE(fresh.stat().st_mode) == 0o600
    shared = tmp_path / "shared.sqlite3"
    shared.write_bytes(b"")
    os.chmod(shared, 0o644)
    _private_file(str(shared))
    assert stat.S_IMODE(shared.stat().st_mode) == 0o644
    before = set(os.listdir(tmp_path))
    for special in (":memory:", f"file:{tmp_path / 'uri.sqlite3'}?mode=rwc", "file:relative.sqlite3"):
        _private_file(special)
    assert set(os.listdir(tmp_path)) == before  # neither is a path to create
    r = Registry(str(tmp_path / "through-registry.sqlite3"))
    try:
        assert stat.S_IMODE((tmp_path / "through-registry.sqlite3").stat().st_mode) == 0o600
    finally:
        r.close()
