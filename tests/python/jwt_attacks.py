#!/usr/bin/env python3
"""A corpus of forged / malformed access tokens, derived from one valid token.

    .venv/bin/python tests/python/jwt_attacks.py \\
        (--jwks-url URL | --jwks-file PATH) --token VALID_ACCESS_TOKEN \\
        --jku-url http://127.0.0.1:PORT/ [--other-token ANOTHER_VALID_TOKEN]

stdout: one JSON object per line, {"name": "family/variant", "token": "..."};
names are unique and the order is stable. Every token must be rejected by a
correct verifier of the gateway's access tokens (401 on a bearer route,
{"active": false} at /oauth/introspect); none is accepted by one. The valid
token and the JWKS are read, never modified; the valid token's header and
claims are decoded without verification and re-used.
stderr: a summary line, or the reason for exit status 1 (bad token / JWKS).
Exit status: 0 ok, 1 the inputs could not be used, 2 bad arguments.

Where a check can only be made with a valid signature (claim types, typ, ...),
the token is signed with an attacker key under our kid: it must fail on the
signature here, and the Rust tests check the claim rules with the server key.

Families (name prefix) and what each tests; R-JWT-n are the rules of
shared/reference/security-bar.md §3.1, RFC 8725 is the JWT BCP:

  alg_none/        "alg": none / None / NONE / nOnE, empty signature and the
                   original signature kept. CVE-2015-2951 (alg=none accepted);
                   RFC 8725 §3.1-3.2; ASVS 5.0 9.1.2; R-JWT-2.
  key_confusion/   HS256/384/512 MAC keyed with the server's *public* key as
                   PEM (SPKI, with and without the final newline, and PKCS#1
                   for RSA), DER, the raw key bytes (32-byte Ed25519 key / EC
                   point) and the JWK / JWKS JSON text. CVE-2016-10555 (RS/HS
                   key confusion; CVE-2022-29217 in PyJWT for OKP/EC);
                   RFC 8725 §3.1; R-JWT-1.
  weak_hmac/       HS256/384/512 with an empty key and common weak secrets
                   ("secret", "your-secret-key", jwt.io's and FastAPI's docs
                   keys). CVE-2019-20933 / CVE-2020-28637 (blank password);
                   RFC 8725 §3.5; R-JWT-10.
  signature/       empty signature (CVE-2020-28042), bit flips, truncation,
                   all-zero signature and ES256 r=s=0 (CVE-2022-21449,
                   "psychic signatures"), the signature of another token, an
                   attacker key's signature under our kid. RFC 8725 §3.3;
                   R-JWT-3.
  tamper/          payload changed (scope widened, sub, exp) or header changed
                   (kid, typ, alg) with the original signature kept. R-JWT-3.
  structure/       2 segments, 4 segments, trailing dot, 5 segments (JWE
                   shape), empty segments, JWS JSON serialization (flattened
                   and general), base64 padding / standard alphabet in the
                   header, whitespace. RFC 7519 §7.2 (compact only),
                   RFC 7515 §2 / §7.1 (base64url, no padding); R-JWT-3.
  key_injection/   jku = --jku-url, x5u = --jku-url (SSRF: the gateway must
                   not fetch it), embedded attacker "jwk" (CVE-2018-0114) and
                   self-signed "x5c", each signed by the attacker key.
                   RFC 8725 §3.10; ASVS 5.0 9.1.3; R-JWT-8.
  kid/             kid "../../../../dev/null" (with an HS256 MAC under the
                   empty key, /dev/null's content), "' OR 1=1--" and a UNION
                   injection (MAC keyed with the injected value), a 10 000
                   character kid, kid of the wrong JSON type, kid missing.
                   RFC 8725 §3.10; WSTG-SESS-10; R-JWT-9.
  typ/             typ "JWT", "refresh+jwt", "id+jwt", of the wrong JSON
                   type, missing (only clearly wrong values: RFC 9068 also
                   allows "application/at+jwt", so that is not here).
                   RFC 8725 §3.11-3.12; RFC 9068 §2.1; R-JWT-7.
  claims/          exp "never", nbf as a string, iat as a string, aud 123,
                   exp removed, exp in the past, nbf / iat in the future,
                   wrong iss, wrong aud, sub missing. CVE-2026-25537
                   (jsonwebtoken claim-type confusion); RFC 8725 §3.8-3.9;
                   ASVS 5.0 9.2.1, 9.2.3; R-JWT-4..6.
  alg_swap/        the other allowed family (EdDSA <-> RS256) or ES256 under
                   our kid, signed by an attacker key; alg removed. RFC 8725
                   §3.1; R-JWT-1.
  size/            a token over 16 KiB (padding claim), with the original
                   signature and with an attacker signature. R-JWT-11.
"""

import argparse
import base64
import copy
import datetime
import hashlib
import hmac
import json
import sys
import urllib.request

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm, get_default_algorithms

OVERSIZE = 17 * 1024  # bytes of token, over the 16 KiB cap
WEAK_SECRETS = [
    ("empty", b""),
    ("secret", b"secret"),
    ("your-secret-key", b"your-secret-key"),
    ("your-256-bit-secret", b"your-256-bit-secret"),  # jwt.io's default
    # the SECRET_KEY of FastAPI's OAuth2/JWT tutorial
    ("fastapi_docs_key", b"09d25e094faa6ca2556c818166b7a9563b93f7099f6f0f4caa6cf63b88e8d3e7"),
]
HMAC_HASH = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64u_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def enc(obj):
    return b64u(json.dumps(obj, separators=(",", ":")).encode("utf-8"))


def mac(alg, key, signing_input):
    return hmac.new(key, signing_input.encode("ascii"), HMAC_HASH[alg]).digest()


class Attacker:
    """A key pair of the same family as the server's, that we hold."""

    def __init__(self, alg):
        if alg == "EdDSA":
            self.private = ed25519.Ed25519PrivateKey.generate()
            self.jwk = OKPAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        elif alg.startswith(("RS", "PS")):
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            self.jwk = RSAAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        elif alg in ("ES256", "ES384", "ES512"):
            curve = {"ES256": ec.SECP256R1, "ES384": ec.SECP384R1, "ES512": ec.SECP521R1}[alg]
            self.private = ec.generate_private_key(curve())
            self.jwk = ECAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        elif alg in HMAC_HASH:
            self.private = None
            self.secret = b"attacker-" + hashlib.sha256(str(id(self)).encode()).digest()
            self.jwk = None
        else:
            raise ValueError(f"unsupported alg {alg!r} in the valid token")
        self.alg = alg
        self.kid = "attacker-key"
        if self.jwk is not None:
            self.jwk = dict(self.jwk, kid=self.kid)

    def sign(self, signing_input, alg=None):
        alg = alg or self.alg
        if alg in HMAC_HASH:
            return mac(alg, self.secret, signing_input)
        return get_default_algorithms()[alg].sign(signing_input.encode("ascii"), self.private)

    def x5c(self):
        """A self-signed certificate for the attacker key, base64 DER (RFC 7515 §4.1.6)."""
        if self.private is None:
            return None
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "portcullis")])
        now = datetime.datetime.now(datetime.timezone.utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.private.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
        )
        algo = None if isinstance(self.private, ed25519.Ed25519PrivateKey) else hashes.SHA256()
        cert = builder.sign(self.private, algo)
        return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode("ascii")


class Corpus:
    def __init__(self, token, jwks, jwks_text, jku_url, other_token):
        parts = token.split(".")
        if len(parts) != 3:
            raise ValueError(f"--token has {len(parts)} segments, want 3")
        self.h64, self.p64, self.s64 = parts
        self.header = json.loads(b64u_decode(self.h64))
        self.claims = json.loads(b64u_decode(self.p64))
        self.sig = b64u_decode(self.s64)
        self.alg = self.header.get("alg")
        self.kid = self.header.get("kid")
        self.jwks = jwks
        self.jwks_text = jwks_text
        self.jku_url = jku_url
        self.other_token = other_token
        self.attacker = Attacker(self.alg)
        self.out = []
        self.names = set()

    # --- building blocks ---------------------------------------------------

    def emit(self, name, token):
        if name in self.names:
            raise AssertionError(f"duplicate name {name}")
        self.names.add(name)
        self.out.append({"name": name, "token": token})

    def hdr(self, **changes):
        """The valid header with changes; a value of None removes the field."""
        h = copy.deepcopy(self.header)
        for k, v in changes.items():
            if v is None:
                h.pop(k, None)
            else:
                h[k] = v
        return h

    def clm(self, **changes):
        c = copy.deepcopy(self.claims)
        for k, v in changes.items():
            if v is None:
                c.pop(k, None)
            else:
                c[k] = v
        return c

    def keep_sig(self, name, header=None, claims=None):
        """Header and/or claims changed, the original signature kept."""
        h64 = enc(header) if header is not None else self.h64
        p64 = enc(claims) if claims is not None else self.p64
        self.emit(name, f"{h64}.{p64}.{self.s64}")

    def attacker_signed(self, name, header, claims, alg=None):
        h64, p64 = enc(header), enc(claims)
        sig = self.attacker.sign(f"{h64}.{p64}", alg or header.get("alg") or self.alg)
        self.emit(name, f"{h64}.{p64}.{b64u(sig)}")

    def hmac_signed(self, name, alg, key, header=None, claims=None):
        h64 = enc(header if header is not None else self.hdr(alg=alg))
        p64 = enc(claims) if claims is not None else self.p64
        sig = mac(alg, key, f"{h64}.{p64}")
        self.emit(name, f"{h64}.{p64}.{b64u(sig)}")

    def server_keys(self):
        """(label, cryptography public key, JWK dict) for the keys to confuse with."""
        keys = self.jwks.get("keys", []) if isinstance(self.jwks, dict) else []
        chosen = [k for k in keys if k.get("kid") == self.kid] or keys[:1]
        out = []
        for i, jwk_dict in enumerate(chosen):
            try:
                pub = jwt.PyJWK(jwk_dict).key
            except Exception as e:  # noqa: BLE001
                print(f"jwt_attacks: skipping JWKS key {jwk_dict.get('kid')!r}: {e}", file=sys.stderr)
                continue
            out.append(("" if i == 0 else f"_{i}", pub, jwk_dict))
        return out

    # --- families ----------------------------------------------------------

    def alg_none(self):
        for alg in ("none", "None", "NONE", "nOnE"):
            h64 = enc(self.hdr(alg=alg))
            self.emit(f"alg_none/{alg}/empty_sig", f"{h64}.{self.p64}.")
            self.emit(f"alg_none/{alg}/orig_sig", f"{h64}.{self.p64}.{self.s64}")
        h64 = enc(self.hdr(alg="none", kid=None))
        self.emit("alg_none/none/no_kid_empty_sig", f"{h64}.{self.p64}.")

    def key_confusion(self):
        keys = self.server_keys()
        if not keys:
            print("jwt_attacks: no public key in the JWKS, key_confusion/ skipped", file=sys.stderr)
        for label, pub, jwk_dict in keys:
            pem = pub.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            der = pub.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            material = [
                ("pem", pem),
                ("pem_no_newline", pem.rstrip(b"\n")),
                ("der", der),
            ]
            if isinstance(pub, ed25519.Ed25519PublicKey):
                material.append(
                    ("raw32", pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
                )
            elif isinstance(pub, rsa.RSAPublicKey):
                material.append(
                    ("pem_pkcs1", pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1))
                )
                material.append(
                    ("der_pkcs1", pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1))
                )
                n = pub.public_numbers().n
                material.append(("raw_modulus", n.to_bytes((n.bit_length() + 7) // 8, "big")))
            elif isinstance(pub, ec.EllipticCurvePublicKey):
                material.append(
                    (
                        "raw_point",
                        pub.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint),
                    )
                )
            material.append(("jwk_json", json.dumps(jwk_dict).encode()))
            material.append(("jwk_json_compact", json.dumps(jwk_dict, separators=(",", ":")).encode()))
            if label == "":
                material.append(("jwks_text", self.jwks_text))
            for what, key in material:
                self.hmac_signed(f"key_confusion/HS256/{what}{label}", "HS256", key)
            for alg in ("HS384", "HS512"):
                self.hmac_signed(f"key_confusion/{alg}/pem{label}", alg, pem)
                self.hmac_signed(f"key_confusion/{alg}/der{label}", alg, der)

    def weak_hmac(self):
        for alg in ("HS256", "HS384", "HS512"):
            for what, key in WEAK_SECRETS:
                self.hmac_signed(f"weak_hmac/{alg}/{what}", alg, key)

    def signature(self):
        self.emit("signature/empty", f"{self.h64}.{self.p64}.")
        sig = bytearray(self.sig)
        if sig:
            last = bytearray(sig)
            last[-1] ^= 0x01
            self.emit("signature/bitflip_last", f"{self.h64}.{self.p64}.{b64u(bytes(last))}")
            first = bytearray(sig)
            first[0] ^= 0x80
            self.emit("signature/bitflip_first", f"{self.h64}.{self.p64}.{b64u(bytes(first))}")
            self.emit("signature/truncated", f"{self.h64}.{self.p64}.{b64u(bytes(sig[:-1]))}")
            extended = b64u(bytes(sig) + bytes(1))
            self.emit("signature/extended", f"{self.h64}.{self.p64}.{extended}")
            self.emit("signature/doubled", f"{self.h64}.{self.p64}.{b64u(bytes(sig) * 2)}")
        self.emit("signature/zero_same_length", f"{self.h64}.{self.p64}.{b64u(bytes(len(sig) or 64))}")
        self.emit("signature/single_zero_byte", f"{self.h64}.{self.p64}.AA")
        # CVE-2022-21449: ECDSA r = s = 0 (P1363 form, 64 bytes for ES256)
        h64 = enc(self.hdr(alg="ES256"))
        self.emit("signature/es256_psychic_r0_s0", f"{h64}.{self.p64}.{b64u(bytes(64))}")
        # the signature of another token over this token's header and claims
        if self.other_token and self.other_token.count(".") == 2:
            other_sig = self.other_token.split(".")[2]
            if other_sig != self.s64:
                self.emit("signature/of_other_token", f"{self.h64}.{self.p64}.{other_sig}")
                oh, op, _ = self.other_token.split(".")
                self.emit("signature/other_token_with_ours", f"{oh}.{op}.{self.s64}")
        # without another token: a real signature of other bytes by an attacker key
        other_claims = self.clm(jti=self.claims.get("jti", "") + "-other")
        h64, p64 = self.h64, enc(other_claims)
        fake = self.attacker.sign(f"{h64}.{p64}")
        self.emit("signature/of_other_claims_attacker", f"{self.h64}.{self.p64}.{b64u(fake)}")
        self.attacker_signed("signature/attacker_key_our_kid", self.hdr(), self.clm())

    def tamper(self):
        scope = self.claims.get("scope", "")
        widened = " ".join(filter(None, [scope, "admin", "*", "admin:write", "keys:admin"]))
        self.keep_sig("tamper/payload_scope_widened", claims=self.clm(scope=widened))
        self.keep_sig("tamper/payload_scope_star", claims=self.clm(scope="*"))
        self.keep_sig("tamper/payload_sub_admin", claims=self.clm(sub="admin"))
        self.keep_sig("tamper/payload_exp_extended", claims=self.clm(exp=int(self.claims.get("exp", 0)) + 10 * 365 * 86400))
        self.keep_sig("tamper/payload_aud_widened", claims=self.clm(aud=["portcullis", "other"]))
        # same JSON, different serialisation: the signature covers bytes, not meaning
        spaced = b64u(json.dumps(self.claims, indent=1).encode())
        self.emit("tamper/payload_reserialized", f"{self.h64}.{spaced}.{self.s64}")
        self.keep_sig("tamper/header_kid_changed", header=self.hdr(kid=(self.kid or "") + "x"))
        self.keep_sig("tamper/header_typ_changed", header=self.hdr(typ="JWT"))
        self.keep_sig("tamper/header_alg_hs256", header=self.hdr(alg="HS256"))
        self.keep_sig("tamper/header_extra_field", header=self.hdr(x="1"))
        self.keep_sig("tamper/header_crit_unknown", header=self.hdr(crit=["x-unknown"], **{"x-unknown": True}))

    def structure(self):
        h, p, s = self.h64, self.p64, self.s64
        self.emit("structure/two_segments", f"{h}.{p}")
        self.emit("structure/four_segments", f"{h}.{p}.{s}.{s}")
        self.emit("structure/trailing_dot", f"{h}.{p}.{s}.")
        self.emit("structure/leading_dot", f".{h}.{p}.{s}")
        self.emit("structure/five_segments_jwe_shape", f"{h}.{p}.{s}.{p}.{s}")
        self.emit("structure/empty_header", f".{p}.{s}")
        self.emit("structure/empty_payload", f"{h}..{s}")
        self.emit("structure/only_dots", "..")
        self.emit("structure/one_segment", h)
        flattened = {"protected": h, "payload": p, "signature": s}
        self.emit("structure/json_flattened", json.dumps(flattened, separators=(",", ":")))
        general = {"payload": p, "signatures": [{"protected": h, "signature": s}]}
        self.emit("structure/json_general", json.dumps(general, separators=(",", ":")))
        padded = lambda x: x + "=" * (-len(x) % 4)  # noqa: E731
        if padded(h) != h:
            self.emit("structure/header_padded", f"{padded(h)}.{p}.{s}")
        std = base64.b64encode(b64u_decode(h)).decode().rstrip("=")
        if std != h:
            self.emit("structure/header_std_base64", f"{std}.{p}.{s}")
        self.emit("structure/space_inside", f"{h}. {p}.{s}")
        self.emit("structure/header_not_json", f"{b64u(b'not json')}.{p}.{s}")
        self.emit("structure/header_json_array", f"{b64u(b'[]')}.{p}.{s}")
        self.emit("structure/payload_not_json", f"{h}.{b64u(b'not json')}.{s}")
        self.emit("structure/bad_base64_char", f"{h[:-1]}!.{p}.{s}")

    def key_injection(self):
        a = self.attacker
        claims = self.clm()
        self.attacker_signed("key_injection/jku_our_kid", self.hdr(jku=self.jku_url), claims)
        self.attacker_signed("key_injection/jku_attacker_kid", self.hdr(jku=self.jku_url, kid=a.kid), claims)
        self.attacker_signed("key_injection/x5u_our_kid", self.hdr(x5u=self.jku_url), claims)
        self.attacker_signed("key_injection/x5u_attacker_kid", self.hdr(x5u=self.jku_url, kid=a.kid), claims)
        # jku with the original signature: no forgery needed to trigger a fetch
        self.keep_sig("key_injection/jku_orig_sig", header=self.hdr(jku=self.jku_url))
        if a.jwk is not None:
            self.attacker_signed("key_injection/jwk_embedded_our_kid", self.hdr(jwk=a.jwk), claims)
            self.attacker_signed("key_injection/jwk_embedded_attacker_kid", self.hdr(jwk=a.jwk, kid=a.kid), claims)
            self.attacker_signed("key_injection/jwk_embedded_no_kid", self.hdr(jwk=a.jwk, kid=None), claims)
            x5c = a.x5c()
            self.attacker_signed("key_injection/x5c_our_kid", self.hdr(x5c=[x5c]), claims)
            self.attacker_signed("key_injection/x5c_no_kid", self.hdr(x5c=[x5c], kid=None), claims)

    def kid_family(self):
        claims = self.clm()
        trav = "../../../../dev/null"
        self.hmac_signed("kid/path_traversal_dev_null_hs256_empty", "HS256", b"", header=self.hdr(alg="HS256", kid=trav))
        self.attacker_signed("kid/path_traversal_dev_null_attacker", self.hdr(kid=trav), claims)
        self.keep_sig("kid/path_traversal_dev_null_orig_sig", header=self.hdr(kid=trav))
        sqli = "' OR 1=1--"
        self.hmac_signed("kid/sqli_or_1_1_hs256_empty", "HS256", b"", header=self.hdr(alg="HS256", kid=sqli))
        self.attacker_signed("kid/sqli_or_1_1_attacker", self.hdr(kid=sqli), claims)
        union = "x' UNION SELECT 'attacker'--"
        self.hmac_signed("kid/sqli_union_hs256", "HS256", b"attacker", header=self.hdr(alg="HS256", kid=union))
        cmd = "key|sleep 5"
        self.attacker_signed("kid/command_injection", self.hdr(kid=cmd), claims)
        long_kid = "A" * 10_000
        self.attacker_signed("kid/long_10000_attacker", self.hdr(kid=long_kid), claims)
        self.keep_sig("kid/long_10000_orig_sig", header=self.hdr(kid=long_kid))
        self.attacker_signed("kid/wrong_type_int", self.hdr(kid=1), claims)
        self.attacker_signed("kid/empty_string", self.hdr(kid=""), claims)
        self.attacker_signed("kid/missing_attacker", self.hdr(kid=None), claims)
        self.keep_sig("kid/missing_orig_sig", header=self.hdr(kid=None))

    def typ_family(self):
        claims = self.clm()
        for label, typ in (("JWT", "JWT"), ("refresh+jwt", "refresh+jwt"), ("id+jwt", "id+jwt")):
            self.attacker_signed(f"typ/{label}", self.hdr(typ=typ), claims)
        self.attacker_signed("typ/missing", self.hdr(typ=None), claims)
        self.attacker_signed("typ/wrong_type_int", self.hdr(typ=1), claims)

    def claims_family(self):
        now = int(self.claims.get("iat", 0)) or 1_700_000_000
        cases = [
            ("exp_string_never", self.clm(exp="never")),
            ("exp_string_number", self.clm(exp=str(int(self.claims.get("exp", now + 900))))),
            ("nbf_string", self.clm(nbf="9999999999")),
            ("iat_string", self.clm(iat="now")),
            ("aud_int_123", self.clm(aud=123)),
            ("exp_removed", self.clm(exp=None)),
            ("exp_null", dict(self.clm(), exp=None)),
            ("exp_past", self.clm(exp=now - 3600)),
            ("nbf_future", self.clm(nbf=now + 3600)),
            ("iat_future", self.clm(iat=now + 3600)),
            ("iss_wrong", self.clm(iss="https://attacker.example")),
            ("iss_removed", self.clm(iss=None)),
            ("aud_wrong", self.clm(aud="other-api")),
            ("aud_removed", self.clm(aud=None)),
            ("sub_removed", self.clm(sub=None)),
            ("scope_array", self.clm(scope=["admin"])),
        ]
        for name, claims in cases:
            self.attacker_signed(f"claims/{name}", self.hdr(), claims)
        # a refresh-token-looking body in an access token's clothes
        self.attacker_signed("claims/refresh_shape", self.hdr(typ="refresh+jwt"), self.clm(token_use="refresh"))

    def alg_swap(self):
        claims = self.clm()
        other = "RS256" if self.alg == "EdDSA" else "EdDSA"
        swap = Attacker(other)
        h64, p64 = enc(self.hdr(alg=other)), enc(claims)
        self.emit(f"alg_swap/{other}_attacker_our_kid", f"{h64}.{p64}.{b64u(swap.sign(f'{h64}.{p64}'))}")
        es = Attacker("ES256")
        h64 = enc(self.hdr(alg="ES256"))
        self.emit("alg_swap/ES256_attacker_our_kid", f"{h64}.{p64}.{b64u(es.sign(f'{h64}.{p64}'))}")
        self.keep_sig("alg_swap/alg_removed_orig_sig", header=self.hdr(alg=None))
        self.keep_sig("alg_swap/alg_wrong_type", header=self.hdr(alg=["EdDSA", "none"]))
        self.keep_sig("alg_swap/alg_lowercase", header=self.hdr(alg=str(self.alg).lower()))

    def size(self):
        base = len(self.h64) + len(self.p64) + len(self.s64) + 2
        pad_chars = max(0, (OVERSIZE - base) * 3 // 4 + 64)
        big = self.clm(pad="A" * pad_chars)
        self.keep_sig("size/over_16kib_orig_sig", claims=big)
        self.attacker_signed("size/over_16kib_attacker", self.hdr(), big)
        big_hdr = self.hdr(pad="A" * pad_chars)
        self.keep_sig("size/over_16kib_header_orig_sig", header=big_hdr)

    def build(self):
        self.alg_none()
        self.key_confusion()
        self.weak_hmac()
        self.signature()
        self.tamper()
        self.structure()
        self.key_injection()
        self.kid_family()
        self.typ_family()
        self.claims_family()
        self.alg_swap()
        self.size()
        # the corpus must not contain the valid token itself
        valid = f"{self.h64}.{self.p64}.{self.s64}"
        assert all(t["token"] != valid for t in self.out), "the valid token slipped into the corpus"
        return self.out


def load_jwks(args):
    if args.jwks_file:
        with open(args.jwks_file, "rb") as fh:
            raw = fh.read()
    else:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(args.jwks_url, timeout=10) as resp:
            raw = resp.read()
    return json.loads(raw), raw


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--jwks-url", help="the gateway's /.well-known/jwks.json")
    src.add_argument("--jwks-file", help="a JWKS file instead of --jwks-url")
    p.add_argument("--token", required=True, help="a valid access token from the gateway")
    p.add_argument("--jku-url", required=True, help="URL put in jku / x5u; must see no request")
    p.add_argument("--other-token", help="another valid token, for signature/of_other_token")
    a = p.parse_args(argv)

    try:
        jwks, raw = load_jwks(a)
        corpus = Corpus(a.token.strip(), jwks, raw, a.jku_url, a.other_token)
        out = corpus.build()
    except Exception as e:  # noqa: BLE001
        print(f"jwt_attacks: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    for item in out:
        sys.stdout.write(json.dumps(item, separators=(",", ":")) + "\n")
    sys.stdout.flush()
    print(f"jwt_attacks: {len(out)} tokens", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
