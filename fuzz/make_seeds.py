#!/usr/bin/env python3
"""Writes the committed seed corpus: fuzz/corpus/<target>/seed_<case>.

Run from anywhere; it rewrites the seed files and leaves what libFuzzer added alone. The keys are
fixed, checksum-valid keys of the `om`, `acme2` and `abcdefghijklmnop` formats (CRC32 in base62,
as src/key/checksum.rs does).
"""
import os
import zlib

BASE62 = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def checksum(body: bytes) -> bytes:
    crc = zlib.crc32(body)
    out = bytearray()
    for _ in range(6):
        out.insert(0, BASE62[crc % 62])
        crc //= 62
    return bytes(out)


def key(prefix: bytes, env: bytes, random: bytes) -> bytes:
    assert len(random) == 32
    body = prefix + b"_" + env + b"_" + random
    return body + checksum(body)


LIVE = key(b"om", b"live", b"2Xb9kQ7fLmN4pR8sT1vW3yZ5aC6dE0gH")
TEST = key(b"om", b"test", b"Zz9Yy8Xx7Ww6Vv5Uu4Tt3Ss2Rr1Qq0Pp")
ACME = key(b"acme2", b"live", b"0123456789abcdefghijABCDEFGHIJkl")
BAD_CHECKSUM = LIVE[:-1] + (b"A" if LIVE[-1:] != b"A" else b"B")
WRONG_ENV = b"om_prod_" + LIVE[8:]
WRONG_PREFIX = b"xx_" + LIVE[3:]

KEYS = {
    "live": LIVE,
    "test": TEST,
    "acme2": ACME,
    "bad_checksum": BAD_CHECKSUM,
    "wrong_environment": WRONG_ENV,
    "wrong_prefix": WRONG_PREFIX,
    "too_short": LIVE[:-1],
    "too_long": LIVE + b"A",
    "upper_case_body": LIVE[:8] + LIVE[8:].swapcase(),
    "underscore_in_body": LIVE[:20] + b"_" + LIVE[21:],
    "non_utf8_right_length": LIVE[:8] + b"\xc3\xa9" * 19,
    "empty": b"",
    "prefix_only": b"om_live_",
    "longest_prefix": key(b"abcdefghijklmnop", b"test", b"Zz9Yy8Xx7Ww6Vv5Uu4Tt3Ss2Rr1Qq0Pp"),
    # A matching checksum over bytes outside base62: only the alphabet check refuses it.
    "outside_base62_with_checksum": key(b"om", b"live", b"2Xb9kQ7fLmN4pR8s-.vW3yZ5aC6dE0gH"),
    # Around SHA-256's one-block limit (55 bytes with the padding).
    "sha256_55_bytes": LIVE + b"x" * 9,
    "sha256_56_bytes": LIVE + b"x" * 10,
    "sha256_64_bytes": LIVE + b"x" * 18,
}


def header_cases(live: bytes, test: bytes, revoked: bytes, expired: bytes, unknown: bytes):
    return {
        "valid_live": b"Bearer " + live,
        "valid_test": b"Bearer " + test,
        "lowercase_scheme": b"bearer " + live,
        "uppercase_scheme": b"BEARER " + live,
        "several_spaces": b"Bearer     " + live,
        "surrounding_whitespace": b" \t Bearer " + live + b" \t",
        "tab_after_scheme": b"Bearer\t" + live,
        "space_then_tab": b"Bearer \t" + live,
        "revoked": b"Bearer " + revoked,
        "expired": b"Bearer " + expired,
        "unknown": b"Bearer " + unknown,
        "bad_checksum": b"Bearer " + BAD_CHECKSUM,
        "wrong_environment": b"Bearer " + WRONG_ENV,
        "trailing_garbage": b"Bearer " + live + b"x",
        "padding": b"Bearer " + live + b"==",
        "quoted": b'Bearer "' + live + b'"',
        "two_tokens": b"Bearer " + live + b" " + test,
        "comma_list": b"Bearer " + live + b", Basic dXNlcg==",
        "two_fields": b"Bearer " + live + b"\nBearer " + live,
        "two_fields_mixed": b"Bearer " + live + b"\nBasic dXNlcg==",
        "three_fields_empty": b"\n\n",
        "basic": b"Basic dXNlcjpwYXNzd29yZA==",
        "token_scheme": b"Token " + live,
        "no_space": b"Bearer" + live,
        "bearer_alone": b"Bearer",
        "bearer_spaces": b"Bearer    ",
        "empty_field": b" ",
        "missing": b"",
        "non_utf8": b"Bearer om_live_\xff\xfe\xc3\x28abc",
        "latin1": b"Bearer caf\xe9",
        "very_long": b"Bearer " + b"a" * 4000,
        "b64token_chars": b"Bearer a-b.c_d~e+f/g==",
        "padding_only": b"Bearer ==",
        "padding_inside": b"Bearer a=b",
        "tab_inside_token": b"Bearer a\tb",
        "bearer_comma": b"Bearer, " + live,
        "bearer_tab_only": b"Bearer\t",
    }


def write(target: str, cases: dict):
    folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", target)
    os.makedirs(folder, exist_ok=True)
    for name, data in cases.items():
        with open(os.path.join(folder, "seed_" + name), "wb") as f:
            f.write(data)


# The header parser sees literal keys.
write("authorization_header", header_cases(LIVE, TEST, ACME, BAD_CHECKSUM, WRONG_PREFIX))
write("key_parse", KEYS)
# The layer target replaces bytes 0x01..0x05 with its store's live, test, revoked, expired and
# unknown keys, and 0x06 with a checksum (see fuzz_targets/layer.rs).
layer = header_cases(b"\x01", b"\x02", b"\x03", b"\x04", b"\x05")
layer["literal_key_not_in_store"] = b"Bearer " + LIVE
layer["key_inside_key"] = b"Bearer \x01\x02"
# 0x06 stands for the checksum of the 40 bytes before it: well-formed keys the store does not hold.
layer["recomputed_checksum"] = b"Bearer om_test_Zz9Yy8Xx7Ww6Vv5Uu4Tt3Ss2Rr1Qq0Pp\x06"
layer["recomputed_checksum_outside_base62"] = b"Bearer om_live_2Xb9kQ7fLmN4pR8s-.vW3yZ5aC6dE0gH\x06"
write("layer", layer)
