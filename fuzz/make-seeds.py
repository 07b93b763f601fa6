#!/usr/bin/env python3
"""Writes the committed seed corpus, fuzz/seeds/<target>/, from the
project's own test inputs, so fuzzing starts from every case the unit tests
know (smuggling payloads, valid heads, chunked bodies, config examples).

Run from anywhere: python3 fuzz/make-seeds.py. It clears and rewrites
fuzz/seeds/. Each seed is named by the SHA-1 of its bytes, as libFuzzer
names corpus files, so seeds and grown corpora never hold two copies.
"""

import hashlib
import random
import re
import shutil
from pathlib import Path

FUZZ = Path(__file__).resolve().parent
ROOT = FUZZ.parent
SEEDS = FUZZ / "seeds"

# A Rust (byte) string literal, or a raw string r#"..."#.
LITERAL = re.compile(r'(?<![A-Za-z0-9_])b?"((?:[^"\\]|\\[\s\S])*)"')
RAW = re.compile(r'(?<![A-Za-z0-9_])b?r#"([\s\S]*?)"#')
ESCAPE = re.compile(r'\\(x[0-9a-fA-F]{2}|u\{[0-9a-fA-F]+\}|\n\s*|[nrt0\\\'"])')


def unescape(body: str) -> bytes:
    """The bytes of a Rust string literal's body (escapes resolved)."""

    def one(m: re.Match) -> str:
        e = m.group(1)
        if e[0] == "x":
            return chr(int(e[1:], 16))
        if e[0] == "u":
            return chr(int(e[2:-1], 16))
        if e[0] == "\n":
            return ""  # line continuation: the newline and indentation go
        return {"n": "\n", "r": "\r", "t": "\t", "0": "\0"}.get(e, e)

    text = ESCAPE.sub(one, body)
    # \xNN in byte strings is a byte; everything else here is ASCII or UTF-8.
    return bytes(ord(c) if ord(c) < 256 else 0 for c in text) if all(
        ord(c) < 256 for c in text
    ) else text.encode()


def literals(path: Path) -> list[bytes]:
    src = path.read_text()
    raw = [m.group(1).encode() for m in RAW.finditer(src)]
    src = RAW.sub('""', src)
    return raw + [unescape(m.group(1)) for m in LITERAL.finditer(src)]


def write(target: str, seeds: list[bytes]) -> None:
    out = SEEDS / target
    out.mkdir(parents=True)
    for seed in dict.fromkeys(seeds):
        (out / hashlib.sha1(seed).hexdigest()).write_bytes(seed)
    print(f"{target}: {len(list(out.iterdir()))} seeds")


def main() -> None:
    shutil.rmtree(SEEDS, ignore_errors=True)
    http = ROOT / "src" / "http"
    heads = []
    for f in ["tests/request.rs", "tests/response.rs", "tests/forward.rs", "forward.rs"]:
        heads += [s for s in literals(http / f) if b"HTTP/1." in s]
    heads += [s for s in literals(ROOT / "benches" / "http.rs") if b"HTTP/1." in s]
    requests = [s for s in heads if not s.lstrip(b"\r\n").startswith(b"HTTP/")]
    responses = [s for s in heads if s.lstrip(b"\r\n").startswith(b"HTTP/")]
    write("request_head", requests)
    write("response_head", responses)

    # Chunked bodies, each fed byte by byte (piece length 1) and in pieces
    # of up to 8 bytes; the second also with tiny limits (top bit).
    bodies = [s for s in literals(http / "tests" / "chunked.rs") if s]
    write(
        "chunked",
        [p + b for b in bodies for p in (b"\x00\x00", b"\x07\x2a", b"\x07\xb5")],
    )

    # Config files: the raw strings of the config tests and the README's
    # example, plus each `with(server, upstream)` call expanded as the tests
    # expand it.
    tests = (ROOT / "src" / "config" / "tests.rs").read_text()
    configs = [m.group(1).encode() for m in RAW.finditer(tests)]
    template = (
        '[server]\nlisten = ["127.0.0.1:8080"]\n{}\n'
        '[[routes]]\nupstream = "app"\n'
        '[upstreams.app]\nbackends = [{{ addr = "127.0.0.1:9001" }}]\n{}\n'
    )
    call = re.compile(r'with\(\s*' + LITERAL.pattern + r'\s*,\s*' + LITERAL.pattern + r'\s*,?\s*\)')
    for m in call.finditer(tests):
        server, upstream = (unescape(g).decode() for g in m.groups())
        configs.append(template.format(server, upstream).encode())
    # with("", "").replace(from, to)
    edit = re.compile(r'with\(\s*""\s*,\s*""\s*\)\s*\.replace\(\s*' + LITERAL.pattern + r'\s*,\s*' + LITERAL.pattern)
    for m in edit.finditer(tests):
        old, new = (unescape(g).decode() for g in m.groups())
        configs.append(template.format("", "").replace(old, new).encode())
    readme = (ROOT / "README.md").read_text()
    configs += [m.group(1).encode() for m in re.finditer(r"```toml\n([\s\S]*?)```", readme)]
    write("config", configs)

    # Accept-Encoding values: the string literals of the negotiation tests
    # (a seed's lines are separate fields).
    accept = [s for s in literals(http / "accept_encoding.rs") if s and len(s) < 200]
    write("accept_encoding", accept + [b"gzip;q=0.5\nbr, *;q=0\nidentity;q=0"])
    # PROXY headers: the v1 lines of the parser's tests, and v2 headers
    # (PROXY over IPv4 and IPv6 with TLVs, LOCAL), each with a request after.
    v1 = [s for s in literals(ROOT / "src" / "proxy_protocol" / "tests.rs") if s.startswith(b"PROXY")]
    sig = b"\r\n\r\n\x00\r\nQUIT\n"
    tlv = b"\x02\x00\x05a.com\x04\x00\x00"
    v4 = bytes([203, 0, 113, 9, 10, 0, 0, 1, 0x0F, 0xA0, 0, 80])
    v6 = bytes(range(16)) + bytes(15) + b"\x01" + b"\x9c\x40\x01\xbb"
    v2 = [
        sig + b"\x21\x11" + (len(v4) + len(tlv)).to_bytes(2, "big") + v4 + tlv,
        sig + b"\x21\x21" + len(v6).to_bytes(2, "big") + v6,
        sig + b"\x20\x00\x00\x00",
    ]
    write("proxy_header", [h + b"GET / HTTP/1.1\r\n\r\n" for h in v1 + v2])

    # roundtrip reads structured input through `arbitrary`: any bytes are a
    # request, so a few fixed pseudo-random buffers of different lengths.
    rng = random.Random(9112)
    write("roundtrip", [rng.randbytes(n) for n in (16, 64, 128, 256, 512, 1024, 2048)])


if __name__ == "__main__":
    main()
