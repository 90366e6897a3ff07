#!/usr/bin/env python3
"""Writes the seed corpus fuzz/corpus/<target>/ from the project's own material: the shipped
policy, the tests' files, and /work/shared/testdata/fido2_vectors.json (or FIDO2_VECTORS).
Run from the repository root: python3 fuzz/seeds.py. The output is committed; re-running it
gives the same files."""
import base64, json, os, struct, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")
VECTORS = os.environ.get("FIDO2_VECTORS", "/work/shared/testdata/fido2_vectors.json")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def fields(*parts):
    out = b""
    for p in parts:
        if isinstance(p, str):
            p = p.encode()
        out += struct.pack("<H", len(p)) + p
    return out


# --- policy ---
with open(os.path.join(ROOT, "conf", "policy.toml")) as f:
    put("policy", "shipped", f.read())
put("policy", "optional", 'default_mode = "optional"\nadmin_groups = ["wheel"]\n')
put("policy", "rules", """default_mode = "optional"
admin_groups = ["wheel"]
exempt_networks = ["10.0.0.0/8", "::1/128"]
[users.alice]
mode = "required"
[groups.wheel]
mode = "required"
[services.sudo]
mode = "required"
[services.cron]
mode = "disabled"
[login]
attempts = 5
[totp]
algorithm = "SHA256"
digits = 8
window = 2
[rate_limit]
max_failures = 3
lockout = "1m"
""")
put("policy", "bad_key", 'default_mode = "optional"\nfrobnicate = 1\n')
put("policy", "bad_mode", 'default_mode = "sometimes"\n')

# --- google_authenticator ---
GA = "RK6R5YLJPYZ56WPX7ZUIA22Z7Q\n\" RATE_LIMIT 3 30 1700000000\n\" WINDOW_SIZE 5\n\" DISALLOW_REUSE 56666666\n\" TOTP_AUTH\n41576704\n56341732\n"
put("google_authenticator", "tool_written", GA)
put("google_authenticator", "step60", GA.replace("\" TOTP_AUTH", "\" TOTP_AUTH\n\" STEP_SIZE 60"))
put("google_authenticator", "hotp", "RK6R5YLJPYZ56WPX7ZUIA22Z7Q\n\" HOTP_COUNTER 1\n")
put("google_authenticator", "short_scratch", "RK6R5YLJPYZ56WPX7ZUIA22Z7Q\n\" TOTP_AUTH\n1234\n")

# --- fido2 and u2f_authfile, from the vectors ---
with open(VECTORS) as f:
    vectors = json.load(f)["vectors"]
def h(s):
    return bytes.fromhex(s or "")


for i, v in enumerate(vectors):
    cose = h(v["cose_public_key_hex"])
    req = (1 if v["flags"]["up"] else 0) | (2 if v["flags"]["uv"] else 0)
    att = h(v.get("registration", {}).get("attestation_object_hex", ""))
    put("fido2", f"vector{i}", bytes([req]) + fields(
        cose, h(v["credential_id_hex"]), v["rp_id"] or "", h(v["auth_data_hex"]),
        h(v["signature_hex"]), h(v["client_data_hash_hex"]), att) + struct.pack("<I", 0))
    if v["alg"] == -7 and i < 4:
        # COSE EC2: ... -2 (0x21): x, -3 (0x22): y, each a 32-byte bstr (0x58 0x20).
        x = cose[cose.index(b"\x21\x58\x20") + 3:][:32]
        y = cose[cose.index(b"\x22\x58\x20") + 3:][:32]
        kh = h(v["credential_id_hex"]) or bytes(range(0x80, 0xc0))
        new = f"alice:{base64.b64encode(kh).decode()},{base64.b64encode(x + y).decode()},es256,+presence"
        point = (bytes([4]) + x + y).hex()
        old = f"alice:{base64.urlsafe_b64encode(kh).decode().rstrip('=')},{point}"
        put("u2f_authfile", f"new{i}_root", b"\x00" + f"{new}\nbob:*,{base64.b64encode(x + y).decode()},es256,+presence+pin\n".encode())
        put("u2f_authfile", f"old{i}_user", b"\x01" + old.encode() + b"\n")
    if v["alg"] == -8 and i < 8:
        x = cose[cose.index(b"\x21\x58\x20") + 3:][:32]
        kh = h(v["credential_id_hex"]) or bytes(range(0x80, 0xc0))
        put("u2f_authfile", f"eddsa{i}", b"\x00" + f"# comment\nalice:{base64.b64encode(kh).decode()},{base64.b64encode(x).decode()},eddsa,\n".encode())

# --- login: programs for twofactor-fuzz's login harness (see twofactor-fuzz/src/login.rs) ---
ENROLL_ALICE = bytes([7, 1, 4, 0])            # BeginTotp as alice, empty code
CONFIRM_ALICE = bytes([8, 1, 1, 0, 0, 2])     # ConfirmTotp: alice's pending id, its current code
BEGIN_ALICE = bytes([0, 0, 1, 1, 0, 0])       # root begins alice's login, service=sshd
ANSWER_CODE = bytes([2, 0, 0, 2])             # the current code
ANSWER_NOISE = bytes([2, 0, 4, 6]) + b"123456"
CLOCK_31 = bytes([9, 2, 31])
put("login", "enroll_then_login", bytes([0]) + ENROLL_ALICE + CONFIRM_ALICE + CLOCK_31 + BEGIN_ALICE + ANSWER_CODE)
put("login", "replay", bytes([0]) + ENROLL_ALICE + CONFIRM_ALICE + CLOCK_31 + BEGIN_ALICE + ANSWER_CODE + BEGIN_ALICE + ANSWER_CODE)
put("login", "wrong_codes", bytes([1]) + ENROLL_ALICE + CONFIRM_ALICE + CLOCK_31 + BEGIN_ALICE + ANSWER_NOISE * 4)
put("login", "recovery", bytes([0]) + ENROLL_ALICE + CONFIRM_ALICE + BEGIN_ALICE + bytes([2, 0, 2, 0, 0]) + bytes([2, 0, 4, 1]) + b"x")
put("login", "unenrolled", bytes([1]) + BEGIN_ALICE + ANSWER_NOISE)
# Security keys: the harness's own key (twofactor-fuzz/src/keys.rs), enrolled as a client does.
BEGIN_KEY_ALICE = bytes([12, 1, 1, 4, 0])          # BeginKey as alice, "key 1", empty code
REGISTER_NEW_KEY = bytes([13, 1, 0, 1, 0, 2, 1])   # her enrollment, a new ES256 key, UP|UV
CONFIRM_KEY = bytes([14, 1, 0, 1, 1, 0, 2, 2, 1, 1])  # honest test assertion
ENROLL_KEY_ALICE = BEGIN_KEY_ALICE + REGISTER_NEW_KEY + CONFIRM_KEY
ASSERT_HONEST = bytes([15, 0, 0, 1, 0, 2, 2, 1, 1])   # first login, her key, next counter
ASSERT_REPLAY = bytes([15, 0, 0, 1, 9])               # the key's last assertion again
ASSERT_REPEAT = bytes([15, 1, 0, 1, 5, 2, 2, 1, 1])   # second open login: the same counter, new challenge
CODE_AT_CUE = bytes([5, 0, 2, 1, 2, 0, 0])            # SkipKey(declined), then a recovery code
put("login", "key_enroll_then_login", bytes([0]) + ENROLL_KEY_ALICE + BEGIN_ALICE + ASSERT_HONEST)
put("login", "key_replay", bytes([0]) + ENROLL_KEY_ALICE + BEGIN_ALICE + ASSERT_HONEST
    + BEGIN_ALICE + ASSERT_REPLAY + BEGIN_ALICE + ASSERT_REPEAT)
put("login", "key_code_at_cue", bytes([3]) + ENROLL_KEY_ALICE + BEGIN_ALICE + CODE_AT_CUE)
