#!/usr/bin/env python3
"""Seeds for the encrypted fuzz targets (`crypto_packet`, `crypto_stream`): the captured serf
traffic in tests/golden/ sealed with the targets' fixed test keys (fuzz_targets/keyed.rs), as
memberlist frames it, so that most seeds get past the tag check; and the same plaintext in the
targets' own-sealing mode, so that the decoders behind the keyring are reached directly.

Usage: tests/fuzz/seeds.py GOLDEN_FILE CORPUS_DIR
       tests/fuzz/seeds.py --count CORPUS_DIR/crypto_TARGET   (files past the tag check)
"""

import sys
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

# The keyring of fuzz_targets/keyed.rs, primary first, and a key it does not hold.
KEYS = [b"muster-fuzz-key-primary-32-bytes", b"muster-fuzz-k16.", b"muster-fuzz-key-24-bytes"]
WRONG = b"muster-fuzz-bad!"
ENCRYPT = 10


def seal(key, version, nonce, msg, aad):
    """memberlist's encrypted payload: [version][nonce 12][ciphertext + tag]."""
    if version == 0:
        pad = 16 - len(msg) % 16
        msg = msg + bytes([pad]) * pad
    return bytes([version]) + nonce + AESGCM(key).encrypt(nonce, msg, aad)


def seal_stream(key, version, nonce, msg):
    """An encrypted stream: [10][length u32 BE] + the payload, those five bytes as AAD."""
    body = 1 + 12 + (len(msg) // 16 + 1) * 16 + 16 if version == 0 else 1 + 12 + len(msg) + 16
    header = bytes([ENCRYPT]) + body.to_bytes(4, "big")
    out = header + seal(key, version, nonce, msg, header)
    assert len(out) == 5 + body
    return out


def opens(data, stream):
    """Whether an input of the targets reaches the decoders behind the keyring."""
    if not data:
        return False
    mode, rest = data[0], data[1:]
    if mode & 0x80:
        return mode & 3 != 3
    if stream:
        if len(rest) < 5 or rest[0] != ENCRYPT:
            return False
        header, rest = rest[:5], rest[5:5 + int.from_bytes(rest[1:5], "big")]
    else:
        header = b""
    if len(rest) < 29 or rest[0] not in (0, 1):
        return False
    for key in KEYS:
        try:
            AESGCM(key).decrypt(rest[1:13], rest[13:], header)
            return True
        except Exception:
            continue
    return False


def count(directory):
    files = [p for p in Path(directory).iterdir() if p.is_file()]
    past = sum(opens(p.read_bytes(), "stream" in Path(directory).name) for p in files)
    print(f"{past} of {len(files)}")


def main():
    if sys.argv[1] == "--count":
        return count(sys.argv[2])
    golden, corpus = Path(sys.argv[1]), Path(sys.argv[2])
    packets, streams = [], []
    for line in golden.read_text().splitlines():
        f = line.split()
        if len(f) == 3 and f[0] in ("udp", "tcp"):
            (packets if f[0] == "udp" else streams).append(bytes.fromhex(f[2]))
    for target, items in (("crypto_packet", packets), ("crypto_stream", streams)):
        out = corpus / target
        out.mkdir(parents=True, exist_ok=True)
        for n, plain in enumerate(items):
            key, version, nonce = KEYS[n % 3], n % 2, bytes([n % 256]) * 12
            if target == "crypto_packet":
                wire = seal(key, version, nonce, plain, b"")
                wrong = seal(WRONG, 1, nonce, plain, b"")
            else:
                wire = seal_stream(key, version, nonce, plain)
                wrong = seal_stream(WRONG, 1, nonce, plain)
            # Mode byte, top bit clear: the bytes as received.
            (out / f"sealed-{n}").write_bytes(b"\x00" + wire)
            (out / f"wrong-key-{n}").write_bytes(b"\x00" + wrong)
            (out / f"plaintext-{n}").write_bytes(b"\x00" + plain)
            # Top bit set: the target seals them itself (key n % 3, version n % 2).
            mode = 0x80 | (n % 3) | ((n % 2) << 2) | ((n % 16) << 3 & 0x78)
            (out / f"own-seal-{n}").write_bytes(bytes([mode]) + plain)
    print(f"seeds: {4 * len(packets)} crypto_packet, {4 * len(streams)} crypto_stream", file=sys.stderr)


if __name__ == "__main__":
    main()
